// Copies the installed front-end libraries into static/vendor, where the studio serves them.
const fs = require("fs");
const path = require("path");

const root = path.resolve(__dirname, "..");
const out = path.join(root, "static", "vendor");
const files = {
  "htmx.min.js": "node_modules/htmx.org/dist/htmx.min.js",
  "chart.umd.min.js": "node_modules/chart.js/dist/chart.umd.min.js",
  // The API docs page (/docs) runs Swagger UI from the studio itself, never from a CDN.
  "swagger-ui-bundle.js": "node_modules/swagger-ui-dist/swagger-ui-bundle.js",
  "swagger-ui.css": "node_modules/swagger-ui-dist/swagger-ui.css",
  "swagger-favicon-32x32.png": "node_modules/swagger-ui-dist/favicon-32x32.png",
};

fs.mkdirSync(out, { recursive: true });
for (const [name, source] of Object.entries(files)) {
  fs.copyFileSync(path.join(root, source), path.join(out, name));
}
