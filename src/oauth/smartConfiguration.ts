import { SCOPES_BY_ROLE } from '../auth/tokens.js';
import type { Config } from '../config.js';
import { oauthEndpoints, oauthIssuer } from './urls.js';

/**
 * SMART discovery (https://hl7.org/fhir/smart-app-launch/conformance.html): the
 * `.well-known/smart-configuration` document and the CapabilityStatement's oauth-uris extension,
 * both from PUBLIC_BASE_URL.
 */

/** What the gateway supports of SMART App Launch 2.x (conformance.html#capabilities). */
const SMART_CAPABILITIES: readonly string[] = [
  'launch-standalone',
  'client-public',
  'client-confidential-symmetric',
  'context-standalone-patient',
  'permission-patient',
  'permission-user',
  'permission-v2',
  'permission-v1',
  'sso-openid-connect',
  'permission-offline',
];

/** Examples of the scopes an app may ask for; any `{patient|user}/{Type}.{cruds}` scope is understood. */
const SCOPES_SUPPORTED: readonly string[] = [
  'openid',
  'fhirUser',
  'launch/patient',
  'offline_access',
  SCOPES_BY_ROLE.patient,
  'patient/Observation.rs',
  'patient/Patient.rs',
  'user/*.rs',
  SCOPES_BY_ROLE.practitioner,
  SCOPES_BY_ROLE.admin,
];

/** GET /fhir/.well-known/smart-configuration */
export function smartConfiguration(config: Pick<Config, 'publicBaseUrl'>) {
  const endpoints = oauthEndpoints(config);
  return {
    issuer: oauthIssuer(config),
    jwks_uri: endpoints.jwks,
    authorization_endpoint: endpoints.authorization,
    grant_types_supported: ['authorization_code', 'refresh_token'],
    token_endpoint: endpoints.token,
    token_endpoint_auth_methods_supported: ['client_secret_basic', 'none'],
    revocation_endpoint: endpoints.revocation,
    scopes_supported: SCOPES_SUPPORTED,
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    capabilities: SMART_CAPABILITIES,
  };
}

/** The CapabilityStatement.rest.security parts SMART asks for (conformance.html#declaring-support-for-oauth2-endpoints). */
export function smartSecurity(config: Pick<Config, 'publicBaseUrl'>) {
  const endpoints = oauthEndpoints(config);
  return {
    extension: [
      {
        url: 'http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris',
        extension: [
          { url: 'authorize', valueUri: endpoints.authorization },
          { url: 'token', valueUri: endpoints.token },
          { url: 'revoke', valueUri: endpoints.revocation },
        ],
      },
    ],
    service: {
      coding: [
        { system: 'http://terminology.hl7.org/CodeSystem/restful-security-service', code: 'SMART-on-FHIR' },
      ],
      text: 'SMART App Launch (OAuth 2.0 authorization code with PKCE)',
    },
  };
}
