// Validates speedscope files against the schema shipped in the speedscope
// npm package (dist/release/file-format-schema.json), with ajv.
//
//   node validate-speedscope.mjs FILE.json...
//
// Prints "FILE: ok" or "FILE: invalid: ERRORS" per file; exits 1 if any is invalid.
import Ajv from "ajv";
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";

const require = createRequire(import.meta.url);
const schema = JSON.parse(
  readFileSync(require.resolve("speedscope/dist/release/file-format-schema.json"), "utf8"),
);
const validate = new Ajv({ allErrors: true, strict: false }).compile(schema);
let failed = false;
for (const file of process.argv.slice(2)) {
  let data;
  try {
    data = JSON.parse(readFileSync(file, "utf8"));
  } catch (error) {
    console.log(`${file}: invalid: not JSON: ${error.message}`);
    failed = true;
    continue;
  }
  if (validate(data)) {
    console.log(`${file}: ok`);
  } else {
    console.log(`${file}: invalid: ${JSON.stringify(validate.errors).slice(0, 2000)}`);
    failed = true;
  }
}
process.exit(failed ? 1 : 0);
