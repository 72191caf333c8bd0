// Tokenizes every sample workflow with the extension's TextMate grammar and
// checks the scopes of merge fields, keywords, methods, strings and
// comments, then the exact tokens of a small workflow.

import assert from "node:assert/strict";
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

import { loadGrammar, scopesAt, tokenize } from "./tokenize.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const samples = process.env.FLOWRUN_SAMPLES || join(here, "..", "..", "..", "samples");

const grammar = await loadGrammar();
let checks = 0;

function expectScope(lineTokens, column, scope, where) {
  const scopes = scopesAt(lineTokens, column);
  assert.ok(scopes.includes(scope), `${where}: expected ${scope}, found ${scopes.join(" ")}`);
  checks += 1;
}

const files = readdirSync(samples).filter((name) => name.endsWith(".flow")).sort();
assert.ok(files.length >= 3, `only ${files.length} samples in ${samples}`);
for (const file of files) {
  const text = readFileSync(join(samples, file), "utf8");
  const lines = tokenize(grammar, text);
  let mergeFields = 0;
  text.split("\n").forEach((line, index) => {
    const where = `${file}:${index + 1}`;
    const tokens = lines[index];
    // Every merge field, in strings, JSON payloads and triple-quoted text.
    for (let column = line.indexOf("<<"); column !== -1; column = line.indexOf("<<", column + 2)) {
      if (line[column - 1] === "\\" || line.trimStart().startsWith("#")) {
        continue;
      }
      expectScope(tokens, column, "meta.merge-field.flow", where);
      expectScope(tokens, column, "punctuation.definition.merge-field.begin.flow", where);
      const root = line.slice(column + 2).match(/^(entity|vars|execution|secret)\b/);
      if (root) {
        expectScope(tokens, column + 2, "variable.language.flow", where);
      }
      mergeFields += 1;
    }
    const keyword = line.match(/^\s*(workflow|let|step|http|llm)\b/);
    if (keyword) {
      expectScope(tokens, line.indexOf(keyword[1]), "keyword.control.flow", where);
    }
    const step = line.match(/^step "/);
    if (step) {
      expectScope(tokens, 5, "string.quoted.double.flow", where);
    }
    const method = line.match(/^\s*http (GET|POST|PUT|PATCH|DELETE) /);
    if (method) {
      expectScope(tokens, line.indexOf(method[1]), "support.constant.method.flow", where);
    }
    if (line.startsWith("#")) {
      expectScope(tokens, 0, "comment.line.number-sign.flow", where);
    }
  });
  assert.ok(mergeFields > 0, `${file} has no merge fields to check`);
}

// The exact scopes of a small workflow.
const small = [
  'step "Send" { # note',
  '  http POST "https://x.test/<<entity.id>>" json {',
  '    "n": "<<upper entity.name>>", "a": <<entity.amount>>',
  "  }",
  '  llm prompt """',
  "    Hello <<default entity.name \"there\">>",
  '  """',
  "}",
].join("\n");
const tokens = tokenize(grammar, small);
const find = (line, text) => {
  const token = tokens[line].find((candidate) => candidate.text === text);
  assert.ok(token, `no token ${JSON.stringify(text)} on line ${line + 1}: ${JSON.stringify(tokens[line].map((t) => t.text))}`);
  checks += 1;
  return token.scopes;
};
assert.deepEqual(find(0, "step"), ["source.flow", "keyword.control.flow"]);
assert.deepEqual(find(0, "Send"), ["source.flow", "string.quoted.double.flow"]);
assert.deepEqual(find(0, " note"), ["source.flow", "comment.line.number-sign.flow"]);
assert.deepEqual(find(0, "#"), ["source.flow", "comment.line.number-sign.flow", "punctuation.definition.comment.flow"]);
assert.deepEqual(find(1, "POST"), ["source.flow", "support.constant.method.flow"]);
assert.deepEqual(find(1, "entity"), [
  "source.flow",
  "string.quoted.double.flow",
  "meta.merge-field.flow",
  "variable.language.flow",
]);
assert.deepEqual(find(1, "json"), ["source.flow", "storage.type.payload.flow"]);
assert.deepEqual(find(2, "upper"), [
  "source.flow",
  "meta.embedded.json.flow",
  "string.quoted.double.json.flow",
  "meta.merge-field.flow",
  "support.function.helper.flow",
]);
assert.deepEqual(find(2, ".amount"), [
  "source.flow",
  "meta.embedded.json.flow",
  "meta.merge-field.flow",
  "variable.other.member.flow",
]);
assert.deepEqual(find(5, "default"), [
  "source.flow",
  "string.quoted.triple.flow",
  "meta.merge-field.flow",
  "support.function.helper.flow",
]);
assert.deepEqual(find(5, '"there"'), [
  "source.flow",
  "string.quoted.triple.flow",
  "meta.merge-field.flow",
  "string.quoted.double.argument.flow",
]);
assert.deepEqual(find(7, "}"), ["source.flow", "punctuation.section.block.flow"]);

console.log(`grammar: ${files.length} samples, ${checks} scope checks passed`);
