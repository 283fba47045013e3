// Copies the installed front-end libraries into static/vendor, where the studio serves them.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const out = path.join(root, "static", "vendor");
const files = {
  "htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js",
  "chart.umd.min.js": "node_modules/chart.js/dist/chart.umd.min.js",
};

fs.mkdirSync(out, { recursive: true });
for (const [name, source] of Object.entries(files)) {
  fs.copyFileSync(path.join(root, source), path.join(out, name));
}
