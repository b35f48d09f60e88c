// Streamed exec, run-ts and run-js (docs/api.md "Streaming"): the answer's JSON lines read as they
// arrive, the output handed to the caller's callbacks, the exit line made into the buffered reply.
import { APIConnectionError, RdsError, ServerError, describe } from "./errors.js";
import type { OutputCallbacks } from "./types.js";

/** The media type asked for (`Accept`) and answered (`Content-Type`). */
export const NDJSON = "application/x-ndjson";

type Line = { type?: unknown; data?: unknown; message?: unknown; [k: string]: unknown };

/** Reads a streamed answer to its end: each output chunk goes to its callback (a returned promise is
 * awaited before the next is read), and the answer is the buffered call's reply, all the output
 * included. An `error` line throws a ServerError (status undefined: it came inside a 200), a stream
 * cut before its exit line an APIConnectionError; either way, and when a callback throws, the
 * connection is closed, which ends the command. `what` names the call in messages. */
export async function readStream<T>(resp: Response, callbacks: OutputCallbacks, what: string): Promise<T> {
  const type = (resp.headers.get("content-type") ?? "").split(";")[0]?.trim().toLowerCase();
  if (type !== NDJSON) {
    // A manager without streaming answers the buffered reply: its output in one chunk each.
    const r = (await resp.json()) as { stdout?: string; stderr?: string };
    if (r.stdout) await callbacks.onStdout?.(r.stdout);
    if (r.stderr) await callbacks.onStderr?.(r.stderr);
    return r as T;
  }
  if (!resp.body) throw new APIConnectionError(`${what}: the streamed answer has no body`);
  const reader = resp.body.getReader();
  // Decoding as a stream keeps a character split between two chunks whole; a newline is one byte.
  const decoder = new TextDecoder();
  const stdout: string[] = [];
  const stderr: string[] = [];
  let exit: Line | undefined;
  let pending = "";

  const line = async (text: string): Promise<void> => {
    if (exit || !text.trim()) return;
    let ev: Line;
    try {
      ev = JSON.parse(text) as Line;
    } catch {
      throw new RdsError(`${what}: a streamed line is not JSON: ${text.slice(0, 200)}`);
    }
    if (ev.type === "stdout" || ev.type === "stderr") {
      const data = typeof ev.data === "string" ? ev.data : "";
      (ev.type === "stdout" ? stdout : stderr).push(data);
      if (data) await (ev.type === "stdout" ? callbacks.onStdout : callbacks.onStderr)?.(data);
    } else if (ev.type === "exit") {
      exit = ev;
    } else if (ev.type === "error") {
      throw new ServerError(typeof ev.message === "string" ? ev.message : "the call could not finish");
    }
    // Lines of other types (a later release's) are skipped.
  };

  try {
    for (;;) {
      let chunk: ReadableStreamReadResult<Uint8Array>;
      try {
        chunk = await reader.read();
      } catch (e) {
        throw new APIConnectionError(`${what}: the streamed answer broke: ${describe(e)}`, undefined, undefined, { cause: e });
      }
      if (chunk.done) break;
      pending += decoder.decode(chunk.value, { stream: true });
      const end = pending.lastIndexOf("\n");
      if (end < 0) continue;
      const lines = pending.slice(0, end).split("\n");
      pending = pending.slice(end + 1);
      for (const l of lines) await line(l);
    }
    await line(pending + decoder.decode());
  } catch (e) {
    await reader.cancel().catch(() => undefined);
    throw e;
  }
  if (!exit) throw new APIConnectionError(`${what}: the streamed answer ended before the command's exit`);
  const { type: _type, ...reply } = exit;
  return { ...reply, stdout: stdout.join(""), stderr: stderr.join("") } as T;
}
