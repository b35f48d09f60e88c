/** Every failure of a call: `status` is the HTTP status (undefined when no answer came),
 * `message` the manager's text, `requestId` its id for the request when it sent one. */
export class RdsError extends Error {
  override name = "RdsError";
  readonly status: number | undefined;
  readonly requestId: string | undefined;

  constructor(message: string, status?: number, requestId?: string, options?: { cause?: unknown }) {
    super(message, options);
    this.status = status;
    this.requestId = requestId;
  }
}

/** The manager could not be reached, the connection broke, or no answer came in time. */
export class APIConnectionError extends RdsError {
  override name = "APIConnectionError";
}

/** 400, 413 or 415: the request was refused as invalid; nothing changed. */
export class ValidationError extends RdsError {
  override name = "ValidationError";
}

/** 401: no valid API key. */
export class AuthenticationError extends RdsError {
  override name = "AuthenticationError";
}

/** 403: authenticated but not allowed. */
export class ForbiddenError extends RdsError {
  override name = "ForbiddenError";
}

/** 404: unknown or destroyed entity. */
export class NotFoundError extends RdsError {
  override name = "NotFoundError";
}

/** 409: wrong state (e.g. exec on a stopped VM), busy, or in use. */
export class ConflictError extends RdsError {
  override name = "ConflictError";
}

/** 429: a rate limit, the VM quota or the agent's concurrency limit (see `message`). */
export class RateLimitError extends RdsError {
  override name = "RateLimitError";
  /** Seconds, when the manager sent `Retry-After`. */
  readonly retryAfter: number | undefined;

  constructor(message: string, status = 429, requestId?: string, retryAfter?: number) {
    super(message, status, requestId);
    this.retryAfter = retryAfter;
  }
}

/** 5xx: the manager, the VMM or the guest agent failed. Also a streamed exec or run that the manager
 * could not finish (its `error` line), with `status` undefined: that answer began as a 200. */
export class ServerError extends RdsError {
  override name = "ServerError";
}

const BY_STATUS: Record<number, typeof RdsError> = {
  400: ValidationError,
  401: AuthenticationError,
  403: ForbiddenError,
  404: NotFoundError,
  409: ConflictError,
  413: ValidationError,
  415: ValidationError,
};

export function errorFor(
  status: number,
  message: string,
  requestId?: string,
  retryAfter?: string | null,
): RdsError {
  if (status === 429) {
    const seconds = retryAfter == null || retryAfter.trim() === "" ? NaN : Number(retryAfter);
    return new RateLimitError(message, status, requestId, Number.isFinite(seconds) ? seconds : undefined);
  }
  if (status >= 500) return new ServerError(message, status, requestId);
  return new (BY_STATUS[status] ?? RdsError)(message, status, requestId);
}

/** An exception as one line, for messages (not exported from the package). */
export function describe(e: unknown): string {
  if (!(e instanceof Error)) return String(e);
  // undici puts the reason (ECONNREFUSED, a reset) in `cause`.
  const cause = e.cause instanceof Error ? `: ${e.cause.message}` : "";
  return `${e.name}: ${e.message}${cause}`;
}
