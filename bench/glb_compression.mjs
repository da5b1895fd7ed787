// Sizes and CPU of meshopt vs Draco compression on GLBs (issue 15).
//
//   node bench/glb_compression.mjs FILE.glb ...   (needs the devDependencies of package.json)
//
// For each file: the original, meshopt through glTF-Transform (reorder + quantize +
// EXT_meshopt_compression, level "high"), gltfpack -cc (meshopt, its own pipeline), and
// Draco through glTF-Transform (edgebreaker, default quantisation). Sizes raw and
// gzip -6 (what an HTTP server with compression sends); CPU ms (process user+system,
// median of 5) to encode and to decode (read back with the decoder model-viewer uses).
import { readFileSync } from "node:fs";
import { basename } from "node:path";
import { gzipSync } from "node:zlib";
import { Logger, NodeIO } from "@gltf-transform/core";
import { ALL_EXTENSIONS } from "@gltf-transform/extensions";
import { draco, meshopt } from "@gltf-transform/functions";
import draco3d from "draco3dgltf";
import { MeshoptDecoder, MeshoptEncoder } from "meshoptimizer";
import { pack as gltfpack } from "gltfpack/library.js"; // initialises itself in Node

const ROUNDS = 5;
await MeshoptEncoder.ready;
await MeshoptDecoder.ready;
const io = new NodeIO()
  .setLogger(new Logger(Logger.Verbosity.SILENT)).registerExtensions(ALL_EXTENSIONS).registerDependencies({
  "draco3d.encoder": await draco3d.createEncoderModule(),
  "draco3d.decoder": await draco3d.createDecoderModule(),
  "meshopt.encoder": MeshoptEncoder,
  "meshopt.decoder": MeshoptDecoder,
});

function cpuMs(fn) {
  const times = [];
  let value;
  return (async () => {
    for (let i = 0; i < ROUNDS; i++) {
      const start = process.cpuUsage();
      value = await fn();
      const used = process.cpuUsage(start);
      times.push((used.user + used.system) / 1000);
    }
    times.sort((a, b) => a - b);
    return [value, times[Math.floor(ROUNDS / 2)]];
  })();
}

async function viaTransform(input, transform) {
  const doc = await io.readBinary(input);
  await doc.transform(transform);
  return io.writeBinary(doc);
}

async function viaGltfpack(input) {
  const files = { "in.glb": input };
  const out = {};
  await gltfpack(["-i", "in.glb", "-o", "out.glb", "-cc"], {
    read: (path) => files[path],
    write: (path, data) => { out[path] = data; },
  });
  return out["out.glb"];
}

const rows = [];
for (const file of process.argv.slice(2)) {
  const input = new Uint8Array(readFileSync(file));
  const variants = [["original", async () => input, 0]];
  for (const [name, encode] of [
    ["meshopt (glTF-Transform)", () => viaTransform(input, meshopt({ encoder: MeshoptEncoder, level: "high" }))],
    ["meshopt (gltfpack -cc)", () => viaGltfpack(input)],
    ["Draco (glTF-Transform)", () => viaTransform(input, draco({ method: "edgebreaker" }))],
  ]) {
    const [bytes, ms] = await cpuMs(encode);
    variants.push([name, async () => bytes, ms]);
  }
  for (const [name, get, encodeMs] of variants) {
    const bytes = await get();
    const [, decodeMs] = await cpuMs(() => io.readBinary(bytes));
    rows.push({
      file: basename(file), variant: name, bytes: bytes.length,
      gzip: gzipSync(bytes, { level: 6 }).length, encodeMs, decodeMs,
    });
  }
}
console.log(JSON.stringify(rows));
