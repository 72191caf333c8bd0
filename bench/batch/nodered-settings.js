// Node-RED settings for the batch benchmark: no editor, warnings only, the
// port from NODE_RED_PORT, and the records of RECORDS parsed once at start
// into the global context, so that a run measures only the requests.
const fs = require("fs");

module.exports = {
  uiHost: "127.0.0.1",
  uiPort: Number(process.env.NODE_RED_PORT),
  httpAdminRoot: false,
  flowFile: "flows.json",
  logging: { console: { level: "warn" } },
  functionGlobalContext: {
    records: fs
      .readFileSync(process.env.RECORDS, "utf8")
      .split("\n")
      .filter((line) => line.length > 0)
      .map((line) => JSON.parse(line)),
    base: process.env.SINK_URL,
  },
};
