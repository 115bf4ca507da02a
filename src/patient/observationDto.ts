import type {
  CodeableConcept,
  Coding,
  Observation,
  ObservationComponent,
  Quantity,
  Range,
} from '@medplum/fhirtypes';

/**
 * Observation -> plain DTO for frontends (no FHIR shapes, no references, no upstream URLs).
 * https://hl7.org/fhir/R4/observation.html
 */

export interface CodeDto {
  system: string | null;
  code: string | null;
  display: string | null;
}

export type ValueDto =
  | {
      type: 'quantity';
      /** FHIR's `comparator` (`<`, `<=`, `>=`, `>`, `ad`): "<0.01 ng/mL" is not 0.01 ng/mL. */
      comparator: string | null;
      value: number | null;
      unit: string | null;
      system: string | null;
      code: string | null;
    }
  | { type: 'string'; value: string }
  | { type: 'boolean'; value: boolean }
  | { type: 'integer'; value: number }
  | { type: 'coded'; system: string | null; code: string | null; display: string | null }
  | { type: 'datetime'; value: string }
  | { type: 'time'; value: string }
  | { type: 'period'; start: string | null; end: string | null }
  | { type: 'range'; low: QuantityDto | null; high: QuantityDto | null }
  | { type: 'ratio'; numerator: QuantityDto | null; denominator: QuantityDto | null }
  /** No value, and the record says why (`dataAbsentReason`: not asked, an error, ...). */
  | { type: 'absent'; system: string | null; code: string | null; display: string | null };

export interface ObservationDto {
  id: string;
  status: string;
  category: CodeDto[];
  code: CodeDto;
  value: ValueDto | null;
  components: { code: CodeDto; value: ValueDto | null }[];
  effective: string | null;
  issued: string | null;
  interpretation: CodeDto[];
  reference_range: { low: QuantityDto | null; high: QuantityDto | null; text: string | null }[];
}

interface QuantityDto {
  comparator: string | null;
  value: number | null;
  unit: string | null;
}

function codeOf(concept: CodeableConcept | undefined): CodeDto {
  const coding: Coding | undefined = concept?.coding?.[0];
  return {
    system: coding?.system ?? null,
    code: coding?.code ?? null,
    display: coding?.display ?? concept?.text ?? null,
  };
}

function quantity(q: Quantity | undefined): QuantityDto | null {
  return q
    ? { comparator: q.comparator ?? null, value: q.value ?? null, unit: q.unit ?? q.code ?? null }
    : null;
}

type ValueCarrier = Pick<
  Observation,
  | 'valueQuantity'
  | 'valueString'
  | 'valueBoolean'
  | 'valueInteger'
  | 'valueCodeableConcept'
  | 'valueDateTime'
  | 'valueTime'
  | 'valuePeriod'
  | 'valueRange'
  | 'valueRatio'
  | 'dataAbsentReason'
>;

function observedValue(source: ValueCarrier | ObservationComponent): ValueDto | null {
  if (source.valueQuantity) {
    const q = source.valueQuantity;
    return {
      type: 'quantity',
      comparator: q.comparator ?? null,
      value: q.value ?? null,
      unit: q.unit ?? q.code ?? null,
      system: q.system ?? null,
      code: q.code ?? null,
    };
  }
  if (source.valueString !== undefined) return { type: 'string', value: source.valueString };
  if (source.valueBoolean !== undefined) return { type: 'boolean', value: source.valueBoolean };
  if (source.valueInteger !== undefined) return { type: 'integer', value: source.valueInteger };
  if (source.valueCodeableConcept) return { type: 'coded', ...codeOf(source.valueCodeableConcept) };
  if (source.valueDateTime !== undefined) return { type: 'datetime', value: source.valueDateTime };
  if (source.valueTime !== undefined) return { type: 'time', value: source.valueTime };
  if (source.valuePeriod)
    return { type: 'period', start: source.valuePeriod.start ?? null, end: source.valuePeriod.end ?? null };
  if (source.valueRange)
    return { type: 'range', low: quantity(source.valueRange.low), high: quantity(source.valueRange.high) };
  if (source.valueRatio) {
    const { numerator, denominator } = source.valueRatio;
    return { type: 'ratio', numerator: quantity(numerator), denominator: quantity(denominator) };
  }
  if (source.dataAbsentReason) return { type: 'absent', ...codeOf(source.dataAbsentReason) };
  return null;
}

function rangeOf(range: { low?: Quantity; high?: Quantity; text?: string } | Range) {
  return {
    low: quantity(range.low),
    high: quantity(range.high),
    text: ('text' in range ? range.text : undefined) ?? null,
  };
}

export function toObservationDto(observation: Observation): ObservationDto {
  return {
    id: observation.id ?? '',
    status: observation.status,
    category: (observation.category ?? []).map(codeOf),
    code: codeOf(observation.code),
    value: observedValue(observation),
    components: (observation.component ?? []).map((c) => ({ code: codeOf(c.code), value: observedValue(c) })),
    effective:
      observation.effectiveDateTime ??
      observation.effectivePeriod?.start ??
      observation.effectiveInstant ??
      null,
    issued: observation.issued ?? null,
    interpretation: (observation.interpretation ?? []).map(codeOf),
    reference_range: (observation.referenceRange ?? []).map(rangeOf),
  };
}
