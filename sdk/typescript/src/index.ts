/**
 * TypeScript client for run-dat-sheesh, a self-hosted runner of microVM sandboxes.
 * `Client` talks to one manager; `Sandbox` is one VM. Errors derive from `RdsError`.
 * @module
 */
export { Client, DEFAULT_URL, Images, Sandboxes, Snapshots } from "./client.js";
export type { ClientOptions, Query, RequestOptions } from "./client.js";
export { Files, Sandbox } from "./sandbox.js";
export type { ClientChoice } from "./sandbox.js";
export {
  APIConnectionError,
  AuthenticationError,
  ConflictError,
  ForbiddenError,
  NotFoundError,
  RateLimitError,
  RdsError,
  ServerError,
  ValidationError,
} from "./errors.js";
export type { LocalPath, Source } from "./local.js";
export type * from "./types.js";
export { VERSION } from "./version.js";
