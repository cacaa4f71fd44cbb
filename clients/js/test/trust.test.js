import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { Identity } from "../src/identity.js";
import { allows, checkCredential, redeem, revokes } from "../src/trust.js";

// An invitation minted by `peer pool init lab` and `peer pool invite lab
// --role worker,submitter --capabilities echo --expires 27000d`: the Rust
// side's token format and signatures.
const TOKEN = readFileSync(new URL("fixtures/lab.invitation", import.meta.url), "utf8");
const POOL_KEY = "GryAS4pahr6UjP3sE8PeUGNZcbeuTdt6DBolA22rHHw";
const member = () => Identity.fromSeed(new Uint8Array(32).fill(7));

test("a tab redeems a daemon-minted invitation into a credential that checks out", async () => {
  const me = await member();
  const credential = await redeem(TOKEN, me);
  assert.equal(credential.member, me.key);
  assert.equal(credential.grant.pool_key, POOL_KEY);
  const grant = await checkCredential(credential, { pool: "lab", poolKey: POOL_KEY, key: me.key });
  assert.deepEqual(grant.roles, ["worker", "submitter"]);
  assert.ok(allows(grant, "submitter", "echo"));
  assert.ok(!allows(grant, "worker", "ocr"));
  assert.ok(!allows(grant, "observer"));
});

test("a credential is refused for another pool, owner or member, or when altered", async () => {
  const me = await member();
  const credential = await redeem(TOKEN, me);
  const check = (c, over = {}) => checkCredential(c, { pool: "lab", poolKey: POOL_KEY, key: me.key, ...over });
  await assert.rejects(check(credential, { pool: "other" }), /for pool "lab", not "other"/);
  await assert.rejects(check(credential, { poolKey: me.key }), /another owner/);
  const stranger = await Identity.generate();
  await assert.rejects(check(credential, { key: stranger.key }), /another member's/);
  const widened = { ...credential, grant: { ...credential.grant, capabilities: [] } };
  await assert.rejects(check(widened), /owner's signature does not verify/);
  const stolen = { ...credential, member: stranger.key };
  await assert.rejects(check(stolen, { key: stranger.key }), /invitation's signature does not verify/);
  await assert.rejects(check(undefined), /no credential/);
  const list = { invites: [credential.invite_key] };
  assert.ok(revokes(list, credential));
  await assert.rejects(check(credential, { revoked: list }), /revoked/);
});

test("a token that is not an invitation says so", async () => {
  const me = await member();
  await assert.rejects(redeem("hello", me), /does not start with jobmesh-invite-v1/);
  await assert.rejects(redeem("jobmesh-invite-v1.!!", me), /not a jobmesh invitation/);
});
