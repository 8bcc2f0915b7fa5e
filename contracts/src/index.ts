export * from "./ids.js";
export * from "./subjects.js";
export * from "./events.js";
export * from "./messages.js";
export * from "./issues.js";
export * from "./signing.js";
export * from "./views.js";
export * from "./release.js";
