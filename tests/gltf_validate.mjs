// Validate a glTF/GLB file with the Khronos glTF-Validator.
// Usage: node tests/gltf_validate.mjs FILE  -> prints the JSON report; exit 1 on errors.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.cwd(), "package.json"));
const validator = require("gltf-validator");

const file = process.argv[2];
if (!file) {
  console.error("usage: node tests/gltf_validate.mjs FILE");
  process.exit(2);
}
const bytes = await readFile(file);
const report = await validator.validateBytes(new Uint8Array(bytes), {
  uri: path.basename(file),
  maxIssues: 100,
});
console.log(JSON.stringify(report, null, 1));
process.exit(report.issues.numErrors > 0 ? 1 : 0);
