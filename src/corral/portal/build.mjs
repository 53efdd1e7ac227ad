// Copies the browser builds of the portal's npm dependencies into static/vendor (served at /portal/static/vendor).
import { cpSync, mkdirSync, rmSync, writeFileSync } from "node:fs";

const files = {
  "@picocss/pico/css/pico.min.css": "pico.min.css",
  "@xterm/xterm/lib/xterm.js": "xterm.js",
  "@xterm/xterm/css/xterm.css": "xterm.css",
  "@xterm/addon-fit/lib/addon-fit.js": "addon-fit.js",
  "chart.js/dist/chart.umd.min.js": "chart.umd.min.js",
  "js-yaml/dist/js-yaml.min.js": "js-yaml.min.js",
};
const out = new URL("./static/vendor/", import.meta.url);
rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });
for (const [from, to] of Object.entries(files)) {
  cpSync(new URL(`./node_modules/${from}`, import.meta.url), new URL(to, out));
}
writeFileSync(new URL(".built", out), new Date().toISOString() + "\n");
