// Starts `flowrun lsp` for .flow files and restarts it when the settings
// change.

const vscode = require("vscode");
const { LanguageClient } = require("vscode-languageclient/node");

let client;

function serverOptions() {
  const settings = vscode.workspace.getConfiguration("flowrun");
  const configured = (settings.get("path") || "").trim();
  const args = ["lsp"];
  const schema = (settings.get("entitySchema") || "").trim();
  if (schema) {
    args.push("--entity-schema", schema);
  }
  return { command: configured || "flowrun", args };
}

async function start() {
  const options = serverOptions();
  client = new LanguageClient("flowrun", "flowrun", options, {
    documentSelector: [
      { scheme: "file", language: "flow" },
      { scheme: "untitled", language: "flow" },
    ],
  });
  try {
    await client.start();
  } catch (error) {
    client = undefined;
    vscode.window.showErrorMessage(
      `flowrun: cannot start \`${options.command} lsp\` (${error.message}). ` +
        "Install flowrun on PATH or set flowrun.path to the binary.",
    );
  }
}

async function restart() {
  if (client) {
    await client.stop();
    client = undefined;
  }
  await start();
}

async function activate(context) {
  context.subscriptions.push(
    vscode.commands.registerCommand("flowrun.restartServer", restart),
    vscode.workspace.onDidChangeConfiguration((event) => {
      if (event.affectsConfiguration("flowrun")) {
        restart();
      }
    }),
  );
  await start();
}

function deactivate() {
  return client ? client.stop() : undefined;
}

module.exports = { activate, deactivate };
