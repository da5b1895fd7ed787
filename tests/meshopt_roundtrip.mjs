// Decode meshopt bitstreams with meshoptimizer's own decoder (the viewer's).
// Usage: node tests/meshopt_roundtrip.mjs < JSON [{mode, count, stride, data: base64}]
//   -> JSON [base64 of each decoded buffer, or {"error": message}].
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.cwd(), "package.json"));
const { MeshoptDecoder } = require("meshoptimizer");

await MeshoptDecoder.ready;
let input = "";
for await (const chunk of process.stdin) input += chunk;
const out = JSON.parse(input).map(({ mode, count, stride, data }) => {
  const source = new Uint8Array(Buffer.from(data, "base64"));
  const target = new Uint8Array(count * stride);
  try {
    MeshoptDecoder.decodeGltfBuffer(target, count, stride, source, mode, "NONE");
    return Buffer.from(target).toString("base64");
  } catch (error) {
    return { error: String(error) };
  }
});
console.log(JSON.stringify(out));
