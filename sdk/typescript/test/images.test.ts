// Images with small files that pass the manager's format checks (no VM boots from them).
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import { test } from "node:test";
import { ConflictError, NotFoundError, ValidationError } from "../src/index.js";
import { client, e2e, tempDir } from "./env.js";

/** The start of an x86-64 ELF vmlinux (what crates/manager/tests/api_images.rs uses). */
function fakeKernel(n = 4096): Uint8Array {
  const k = new Uint8Array(n).fill(7);
  k.set([0x7f, 0x45, 0x4c, 0x46, 2, 1]);
  k[18] = 62;
  k[19] = 0;
  return k;
}

function fakeRootfs(n = 8192): Uint8Array {
  const r = new Uint8Array(n);
  r[1080] = 0x53;
  r[1081] = 0xef;
  r[n / 2] = 1;
  return r;
}

const sha256 = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

function crc32(b: Uint8Array): number {
  let c = ~0;
  for (const x of b) {
    c ^= x;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return ~c >>> 0;
}

/** A zip of one stored (uncompressed) file. */
function zip(name: string, data: Uint8Array): Uint8Array {
  const n = new TextEncoder().encode(name);
  const local = new DataView(new ArrayBuffer(30));
  const central = new DataView(new ArrayBuffer(46));
  const end = new DataView(new ArrayBuffer(22));
  const crc = crc32(data);
  local.setUint32(0, 0x04034b50, true);
  local.setUint16(4, 20, true);
  local.setUint32(14, crc, true);
  local.setUint32(18, data.length, true);
  local.setUint32(22, data.length, true);
  local.setUint16(26, n.length, true);
  central.setUint32(0, 0x02014b50, true);
  central.setUint16(4, 20, true);
  central.setUint16(6, 20, true);
  central.setUint32(16, crc, true);
  central.setUint32(20, data.length, true);
  central.setUint32(24, data.length, true);
  central.setUint16(28, n.length, true);
  const centralAt = 30 + n.length + data.length;
  end.setUint32(0, 0x06054b50, true);
  end.setUint16(8, 1, true);
  end.setUint16(10, 1, true);
  end.setUint32(12, 46 + n.length, true);
  end.setUint32(16, centralAt, true);
  const parts = [new Uint8Array(local.buffer), n, data, new Uint8Array(central.buffer), n, new Uint8Array(end.buffer)];
  return new Uint8Array(Buffer.concat(parts));
}

test("image lifecycle: create, upload every part (bytes and paths), default, delete", { skip: e2e }, async () => {
  const c = client();
  const builtin = (await c.images.list()).find((i) => i.builtIn);
  assert.ok(builtin, "the manager has a built-in image");
  let img = await c.images.create("sdk-test", "made by the TypeScript SDK tests");
  assert.ok(!img.hasKernel && (await c.images.list()).some((i) => i.id === img.id));
  await assert.rejects(c.images.uploadKernel(img.id, new TextEncoder().encode("not a kernel")), (e: unknown) =>
    e instanceof ValidationError && /Kernel must be an ELF/.test(e.message),
  );
  const kernel = join(tempDir(), "vmlinux");
  writeFileSync(kernel, fakeKernel());
  img = await c.images.uploadKernel(img.id, kernel); // from a path: streamed
  assert.ok(img.hasKernel);
  assert.equal(img.kernelSha256, sha256(fakeKernel()));
  img = await c.images.uploadRootfs(img.id, fakeRootfs().buffer as ArrayBuffer);
  assert.ok(img.hasRootfs);
  assert.equal(img.rootfsSha256, sha256(fakeRootfs()));
  const cpio = new TextEncoder().encode("070701".padEnd(512, "0"));
  assert.ok((await c.images.uploadInitrd(img.id, cpio)).hasInitrd);
  await c.images.deleteInitrd(img.id);
  assert.ok(!(await c.images.get(img.id)).hasInitrd);
  img = await c.images.uploadBundle(img.id, zip("img/vmlinux", fakeKernel(8192)));
  assert.equal(img.kernelSha256, sha256(fakeKernel(8192)));
  try {
    await c.images.setDefault(img.id);
    assert.ok((await c.images.get(img.id)).isDefault);
  } finally {
    await c.images.setDefault(builtin.id);
  }
  assert.ok((await c.images.get(builtin.id)).isDefault);
  await assert.rejects(c.images.uploadKernel(builtin.id, fakeKernel()), (e: unknown) =>
    e instanceof ConflictError && e.status === 409 && /read-only/.test(e.message),
  );
  await c.images.delete(img.id);
  await assert.rejects(c.images.get(img.id), NotFoundError);
});
