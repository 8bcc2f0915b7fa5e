import { fileURLToPath } from "node:url";

/** The built dashboard (index.html, app.js, app.css) that the gateway serves; `pnpm build:dashboard` writes it. */
export const DASHBOARD_DIR = fileURLToPath(new URL("../dist", import.meta.url));

export { buildDashboard } from "./build.js";
