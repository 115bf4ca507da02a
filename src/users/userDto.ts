import type { UserRow } from '../../db/schema.js';

/** What a client sees of a user: never a hash, code or secret (DESIGN.md section 3). */
export interface UserDto {
  id: string;
  email: string;
  role: UserRow['role'];
  fhir_id: string | null;
  is_registered: boolean;
  profile: Record<string, string>;
}

function parseProfile(raw: string): Record<string, string> {
  try {
    const value = JSON.parse(raw) as unknown;
    return value && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, string>)
      : {};
  } catch {
    return {};
  }
}

export function toUserDto(user: UserRow): UserDto {
  return {
    id: user.id,
    email: user.email,
    role: user.role,
    fhir_id: user.fhir_resource_id,
    is_registered: user.is_registered === 1,
    profile: parseProfile(user.profile),
  };
}
