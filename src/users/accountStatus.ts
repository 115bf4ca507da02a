/**
 * Whether an account may sign in and use its tokens and sessions: registered (signup done) and
 * active (not deactivated by an admin). Asked on every request, refresh and SMART account lookup.
 */
export function canSignIn(user: { readonly is_active: number; readonly is_registered: number }): boolean {
  return user.is_active === 1 && user.is_registered === 1;
}
