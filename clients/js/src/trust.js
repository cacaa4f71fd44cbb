// Closed pools (docs/protocol.md, "Closed pools"): a member's credential is
// the chain pool key → invitation key → member key. A tab redeems an
// invitation token once (signing its own key with the invitation's secret
// key, in WebCrypto), shows the credential in its hello and in every link
// handshake, and checks every remote's credential itself: a signal-server
// cannot add a member. Roles are enforced by the peers: a worker runs a
// job only for a submitter the pool lets submit it, and a submitter sends
// it only to a worker the pool lets run it.

import { Identity, PURPOSE, base64url, concat, fromBase64url, verify } from "./identity.js";

/** What every invitation token starts with. */
export const TOKEN_PREFIX = "jobmesh-invite-v1.";
const ROLE_BITS = { worker: 1, submitter: 2, observer: 4 };
const utf8 = new TextEncoder();
const text = new TextDecoder();

/**
 * @typedef {{pool: string, pool_key: string, roles: string[], capabilities?: string[], expires: number}} Grant
 * @typedef {{grant: Grant, invite_key: string, sig: string, member: string, member_sig: string}} Credential
 * @typedef {{pool: string, pool_key: string, seq: number, invites?: string[], members?: string[], sig: string}} Revocations
 */

/** Why a credential, an invitation or a revocation list was refused. */
export class TrustError extends Error {}

/** `u16 len` then the UTF-8 of `s`. */
function str(s) {
  const b = utf8.encode(s);
  if (b.length > 0xffff) throw new TrustError("a text field is too long");
  return concat(u16(b.length), b);
}
const u16 = (n) => Uint8Array.of(n >> 8, n & 0xff);
const u32 = (n) => Uint8Array.of(n >>> 24, (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff);
function u64(n) {
  const b = new Uint8Array(8);
  new DataView(b.buffer).setBigUint64(0, BigInt(n));
  return b;
}

/** A 32-byte key or 64-byte signature from its base64url text. */
function bytes(field, value, length) {
  const b = typeof value === "string" ? fromBase64url(value) : new Uint8Array();
  if (b.length !== length) throw new TrustError(`${field} is not ${length} bytes of base64url`);
  return b;
}

/** What the pool key signs for an invitation key: the grant, field by field. @param {Grant} g @param {Uint8Array} inviteKey */
export function grantBytes(g, inviteKey) {
  if (!Array.isArray(g?.roles) || !g.roles.every((r) => r in ROLE_BITS)) throw new TrustError("the grant's roles are not worker, submitter or observer");
  const caps = g.capabilities ?? [];
  if (!Number.isSafeInteger(g.expires) || g.expires < 0) throw new TrustError("the grant's expiry is not a time");
  return concat(
    str(String(g.pool)),
    bytes("pool_key", g.pool_key, 32),
    inviteKey,
    Uint8Array.of(g.roles.reduce((bits, r) => bits | ROLE_BITS[r], 0)),
    u16(caps.length),
    ...caps.map((c) => str(String(c))),
    u64(g.expires),
  );
}

/** What the invitation key signs for a member: the grant's bytes, the owner's signature, the member's key. */
function membershipBytes(c, member) {
  return concat(grantBytes(c.grant, bytes("invite_key", c.invite_key, 32)), bytes("sig", c.sig, 64), member);
}

/**
 * Redeems an invitation token for `identity`: checks the owner's
 * signature and that the token's secret is its invitation key's, then signs
 * the member's key with it. The token is used here only; keep the
 * credential (it is public), not the token.
 * @param {string} token @param {Identity} identity @returns {Promise<Credential>}
 */
export async function redeem(token, identity) {
  const body = token.trim();
  if (!body.startsWith(TOKEN_PREFIX)) throw new TrustError(`not a jobmesh invitation: it does not start with ${TOKEN_PREFIX}`);
  let t;
  try {
    t = JSON.parse(text.decode(fromBase64url(body.slice(TOKEN_PREFIX.length))));
  } catch (e) {
    throw new TrustError(`not a jobmesh invitation: ${e?.message ?? e}`);
  }
  const inviteKey = bytes("invite_key", t.invite_key, 32);
  const secret = await Identity.fromSeed(bytes("secret", t.secret, 32));
  if (secret.key !== t.invite_key) throw new TrustError("not a jobmesh invitation: its secret does not match its key");
  if (!(await verify(bytes("pool_key", t.grant?.pool_key, 32), PURPOSE.invitation, grantBytes(t.grant, inviteKey), bytes("sig", t.sig, 64))))
    throw new TrustError("the invitation is forged: the owner's signature does not verify");
  const endorsement = { grant: t.grant, invite_key: t.invite_key, sig: t.sig };
  const memberSig = await secret.sign(PURPOSE.membership, membershipBytes(endorsement, identity.publicKey));
  return { ...endorsement, member: identity.key, member_sig: base64url(memberSig) };
}

/**
 * Checks `credential` for the member whose key is `key`, in `pool` whose
 * key is `poolKey`, now, against `revoked`; returns what it grants, or
 * throws {@link TrustError} saying what is wrong.
 * @param {any} credential @param {{pool: string, poolKey: string, key: string, revoked?: Revocations | null}} expect
 * @returns {Promise<Grant>}
 */
export async function checkCredential(credential, { pool, poolKey, key, revoked }) {
  if (!credential || typeof credential !== "object") throw new TrustError("it has no credential");
  const g = credential.grant;
  if (g?.pool !== pool) throw new TrustError(`its credential is for pool ${JSON.stringify(g?.pool)}, not ${JSON.stringify(pool)}`);
  if (g.pool_key !== poolKey) throw new TrustError("its credential was issued by another owner");
  const inviteKey = bytes("invite_key", credential.invite_key, 32);
  if (!(await verify(bytes("pool_key", g.pool_key, 32), PURPOSE.invitation, grantBytes(g, inviteKey), bytes("sig", credential.sig, 64))))
    throw new TrustError("its credential is forged: the owner's signature does not verify");
  if (credential.member !== key) throw new TrustError("its credential is another member's");
  if (!(await verify(inviteKey, PURPOSE.membership, membershipBytes(credential, bytes("member", key, 32)), bytes("member_sig", credential.member_sig, 64))))
    throw new TrustError("its credential is forged: the invitation's signature does not verify");
  if (Date.now() / 1000 >= g.expires) throw new TrustError(`its credential expired at ${new Date(g.expires * 1000).toISOString()}`);
  if (revoked && revokes(revoked, credential)) throw new TrustError("its credential was revoked by the pool's owner");
  return g;
}

/** Whether `grant` lets its member act as `role` (for `capability`). @param {Grant} grant @param {string} role @param {string} [capability] */
export function allows(grant, role, capability) {
  const caps = grant.capabilities ?? [];
  return grant.roles.includes(role) && (capability === undefined || caps.length === 0 || caps.includes(capability));
}

/** Checks a revocation list is `pool`'s, signed by `poolKey`. @param {Revocations} list */
export async function verifyRevocations(list, pool, poolKey) {
  if (list?.pool !== pool || list.pool_key !== poolKey) throw new TrustError("the revocation list is another pool's");
  const invites = list.invites ?? [];
  const members = list.members ?? [];
  const signed = concat(
    str(pool),
    bytes("pool_key", poolKey, 32),
    u64(list.seq),
    u32(invites.length),
    ...invites.map((k) => bytes("invites", k, 32)),
    u32(members.length),
    ...members.map((k) => bytes("members", k, 32)),
  );
  if (!(await verify(bytes("pool_key", poolKey, 32), PURPOSE.revocations, signed, bytes("sig", list.sig, 64))))
    throw new TrustError("the revocation list is forged: the owner's signature does not verify");
}

/** Whether `list` withdraws `credential`. @param {Revocations} list @param {Credential} credential */
export function revokes(list, credential) {
  return (list.invites ?? []).includes(credential.invite_key) || (list.members ?? []).includes(credential.member);
}
