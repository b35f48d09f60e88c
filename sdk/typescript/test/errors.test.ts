// Error mapping against the real manager: 401, 403, 404, 429 (409 is in sandbox.test.ts and
// images.test.ts, where a VM or an image is in the wrong state).
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { test } from "node:test";
import { AuthenticationError, Client, ForbiddenError, NotFoundError, RateLimitError, Sandbox, type VM } from "../src/index.js";
import { ADMIN_EMAIL, ADMIN_PASSWORD } from "./manager.js";
import { RUN_JS_LIMIT, api, client, key, url } from "./env.js";

test("a bad key is 401", { skip: api }, async () => {
  const c = new Client({ url, apiKey: "not-the-key" });
  await assert.rejects(c.sandboxes.list(), (e: unknown) => {
    assert.ok(e instanceof AuthenticationError);
    assert.equal(e.status, 401);
    assert.equal(e.message, "Unauthorized");
    return true;
  });
});

test("unknown ids are 404", { skip: api }, async () => {
  const c = client();
  const id = randomUUID();
  await assert.rejects(c.sandboxes.get(id), (e: unknown) => {
    assert.ok(e instanceof NotFoundError);
    assert.equal(e.status, 404);
    assert.equal(e.message, `VM ${id} not found`);
    return true;
  });
  await assert.rejects(c.snapshots.get(`snap-${randomUUID()}`), { name: "NotFoundError", message: /Snapshot not found/ });
  await assert.rejects(c.images.get(`img-${randomUUID()}`), { name: "NotFoundError", message: /Image not found/ });
});

test("a session-only route is 403", { skip: api }, async () => {
  // The SDK has no admin surface; the mapping is checked through its transport.
  await assert.rejects(client().request("GET", "/v1/admin/api-keys"), (e: unknown) => {
    assert.ok(e instanceof ForbiddenError);
    assert.equal(e.status, 403);
    assert.equal(e.message, "Admin session required");
    return true;
  });
});

/** A key of its own (made through an admin session), so that exhausting its rate budget leaves the
 * master key's, which the other tests use, untouched. */
async function dbKey(): Promise<string> {
  const login = await fetch(`${url}/auth/login`, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ email: ADMIN_EMAIL, password: ADMIN_PASSWORD }),
  });
  assert.equal(login.status, 200, await login.clone().text());
  const cookie = (login.headers.get("set-cookie") ?? "").split(";")[0] ?? "";
  const { csrfToken } = (await login.json()) as { csrfToken: string };
  const made = await fetch(`${url}/v1/admin/api-keys`, {
    method: "POST",
    headers: { "Content-Type": "application/json", Cookie: cookie, "X-RDS-CSRF": csrfToken },
    body: JSON.stringify({ name: "sdk-ts-429" }),
  });
  assert.equal(made.status, 201, await made.clone().text());
  return ((await made.json()) as { apiKey: string }).apiKey;
}

test("a rate limit is 429 with retryAfter", { skip: api }, async () => {
  assert.notEqual(key, "");
  // run-js is counted before the handler looks the VM up: an unknown id reaches the limit without
  // booting anything.
  const ghost = new Sandbox(new Client({ url, apiKey: await dbKey() }), { id: randomUUID(), state: "RUNNING" } as VM);
  for (let i = 0; i < RUN_JS_LIMIT; i++) await assert.rejects(ghost.runJs("1"), NotFoundError);
  await assert.rejects(ghost.runJs("1"), (e: unknown) => {
    assert.ok(e instanceof RateLimitError);
    assert.equal(e.status, 429);
    assert.match(e.message, /^Rate limit exceeded/);
    assert.ok(e.retryAfter !== undefined && e.retryAfter > 0 && e.retryAfter <= 60, String(e.retryAfter));
    return true;
  });
});
