// Runs componentize-js on the app's entry module; the javascript_buildpack writes it
// into the staging and runs it in the sandbox with node:
//   node componentize-js.mjs <componentize.js> <entry> <wit dir> <world> <out.wasm>
// Through the API rather than componentize-js's CLI, which cannot hand the
// pre-initializer (wizer) `$HOME`: without it wizer finds no config directory for the
// sandbox's user, who has no passwd entry.
import { writeFile } from "node:fs/promises";
import { pathToFileURL } from "node:url";

const [tool, sourcePath, witPath, worldName, out] = process.argv.slice(2);
const { componentize } = await import(pathToFileURL(tool).href);
const { component } = await componentize({
  sourcePath,
  witPath,
  worldName,
  env: { HOME: process.env.HOME },
});
await writeFile(out, component);
