// Decode a meshopt-compressed GLB with meshoptimizer's own decoder (the one the viewer
// uses), through glTF-Transform, and print its mesh as plain numbers.
// Usage: node tests/meshopt_decode.mjs FILE -> JSON {positions, normals, colors, indices,
// translation, scale, extensions}; exit 1 if it cannot be read.
import { readFile } from "node:fs/promises";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(path.join(process.cwd(), "package.json"));
const { NodeIO } = require("@gltf-transform/core");
const { ALL_EXTENSIONS } = require("@gltf-transform/extensions");
const { MeshoptDecoder } = require("meshoptimizer");

await MeshoptDecoder.ready;
const io = new NodeIO()
  .registerExtensions(ALL_EXTENSIONS)
  .registerDependencies({ "meshopt.decoder": MeshoptDecoder });
const doc = await io.readBinary(new Uint8Array(await readFile(process.argv[2])));
const root = doc.getRoot();
const node = root.listNodes()[0];
const prim = root.listMeshes()[0].listPrimitives()[0];
const values = (accessor) =>
  accessor ? Array.from({ length: accessor.getCount() }, (_, i) => accessor.getElement(i, [])) : null;
console.log(
  JSON.stringify({
    positions: values(prim.getAttribute("POSITION")),
    normals: values(prim.getAttribute("NORMAL")),
    colors: values(prim.getAttribute("COLOR_0")),
    indices: Array.from(prim.getIndices().getArray()),
    translation: node.getTranslation(),
    scale: node.getScale(),
    extensions: root.listExtensionsUsed().map((e) => e.extensionName),
  }),
);
