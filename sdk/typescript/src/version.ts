// Kept equal to `version` in the workspace Cargo.toml and package.json: test/offline.test.ts fails
// when they drift.
export const VERSION = "0.1.0";
