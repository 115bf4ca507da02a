// A process of its own (the schema is process-wide): loads the R4 definitions from the directory
// given, the way the gateway does, then writes @medplum/core's schema with V8's serialiser to the
// file given and prints which source it used. tests/fhir/definitions.test.ts compares the dumps.
import fs from 'node:fs';
import v8 from 'node:v8';
import { getAllDataTypes, globalSchema } from '@medplum/core';
import { indexR4DefinitionsFrom } from '../../src/fhir/definitions.js';

const [dir, out] = process.argv.slice(2) as [string, string];
const used = indexR4DefinitionsFrom(dir);
fs.writeFileSync(out, v8.serialize({ dataTypes: { ...getAllDataTypes() }, searchTypes: globalSchema.types }));
process.stdout.write(used);
