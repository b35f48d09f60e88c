// `await using` and `[Symbol.asyncDispose]` need the well-known symbol, which Node before 18.18 lacks.
// Symbol.for gives the one TypeScript's downlevel helpers and other libraries fall back to as well.
// Imported first by sandbox.ts: the class's computed method name is read when the module loads.
const S = Symbol as { asyncDispose?: symbol };
S.asyncDispose ??= Symbol.for("Symbol.asyncDispose");

export {};
