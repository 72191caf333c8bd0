// Renders a workflow as HTML with the colours of a dark theme, token by
// token through the extension's TextMate grammar, for the screenshot in
// docs/editors.md.
//
//   node scripts/render-html.mjs ../../samples/claim_intake.flow > out.html

import { readFileSync } from "node:fs";

import { loadGrammar, tokenize } from "../test/tokenize.mjs";

// The first rule whose scope prefix a token's scopes contain decides its
// colour, so the more specific scopes come first.
const THEME = [
  ["comment", "color:#6a9955;font-style:italic"],
  ["punctuation.definition.merge-field", "color:#ffd700"],
  ["support.function.helper", "color:#dcdcaa"],
  ["variable.language", "color:#4ec9b0"],
  ["variable.other.member", "color:#9cdcfe"],
  ["string.quoted.double.argument", "color:#ce9178"],
  ["string", "color:#ce9178"],
  ["keyword.control", "color:#c586c0"],
  ["support.constant.method", "color:#dcdcaa;font-weight:bold"],
  ["storage.type.payload", "color:#569cd6"],
  ["keyword.other.option", "color:#9cdcfe"],
  ["keyword.operator", "color:#d4d4d4"],
  ["constant.numeric", "color:#b5cea8"],
  ["constant.language", "color:#569cd6"],
];

const escape = (text) => text.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;");

function style(scopes) {
  for (const [prefix, css] of THEME) {
    if (scopes.some((scope) => scope.startsWith(prefix))) {
      const field = scopes.some((scope) => scope.startsWith("meta.merge-field"));
      return field ? `${css};background:#2b3a4a` : css;
    }
  }
  return scopes.some((scope) => scope.startsWith("meta.merge-field")) ? "background:#2b3a4a" : "";
}

const file = process.argv[2];
const grammar = await loadGrammar();
const lines = tokenize(grammar, readFileSync(file, "utf8"));
const body = lines
  .map((tokens, index) => {
    const code = tokens
      .map((token) => {
        const css = style(token.scopes);
        return css ? `<span style="${css}">${escape(token.text)}</span>` : escape(token.text);
      })
      .join("");
    return `<span class="n">${index + 1}</span>${code}`;
  })
  .join("\n");

process.stdout.write(`<!doctype html>
<html><head><meta charset="utf-8"><style>
body { margin: 0; background: #1e1e1e; }
pre { margin: 0; padding: 16px; color: #d4d4d4; font: 14px/1.45 "DejaVu Sans Mono", monospace; }
.n { display: inline-block; width: 3em; margin-right: 1.2em; text-align: right; color: #858585; }
</style></head><body><pre>${body}</pre></body></html>
`);
