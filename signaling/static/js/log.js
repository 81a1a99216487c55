// Console logging with the project's emoji categories, plus a small in-memory
// history that the debug API (window.miscord) reads.

export const CATEGORIES = {
  websocket: "🔔",
  voice: "🎙️",
  screen: "🖥️",
  stats: "📊",
  debug: "🔧",
};
const STATUS = { error: "❌", warning: "⚠️", success: "✅" };
const HISTORY = 200;

/** The last lines logged (all categories), oldest first. */
export const history = [];

function record(category, level, args) {
  const text = args
    .map((a) => (typeof a === "string" ? a : safeJson(a)))
    .join(" ");
  history.push({ t: Date.now() / 1000, category, level, text });
  if (history.length > HISTORY) history.shift();
}

function safeJson(value) {
  if (value instanceof Error) return `${value.name}: ${value.message}`;
  try {
    return JSON.stringify(value);
  } catch {
    return String(value);
  }
}

/**
 * A logger for one category: `log.info(...)`, `log.success(...)`, `log.warn(...)`,
 * `log.error(...)`, `log.debug(...)`. Every line starts with the category emoji;
 * warnings, errors and successes add their own.
 */
export function logger(category) {
  const emoji = CATEGORIES[category] ?? CATEGORIES.debug;
  const prefix = (status) =>
    status ? `${emoji} ${STATUS[status]} [${category}]` : `${emoji} [${category}]`;
  return {
    debug: (...args) => {
      record(category, "debug", args);
      console.debug(prefix(), ...args);
    },
    info: (...args) => {
      record(category, "info", args);
      console.info(prefix(), ...args);
    },
    success: (...args) => {
      record(category, "success", args);
      console.info(prefix("success"), ...args);
    },
    warn: (...args) => {
      record(category, "warning", args);
      console.warn(prefix("warning"), ...args);
    },
    error: (...args) => {
      record(category, "error", args);
      console.error(prefix("error"), ...args);
    },
  };
}

/** A bounded list of recent errors, kept by each service for getDebugInfo(). */
export class ErrorLog {
  constructor(limit = 20) {
    this.limit = limit;
    this.items = [];
  }

  add(code, message, detail = undefined) {
    const item = { t: Date.now() / 1000, code, message };
    if (detail !== undefined) item.detail = detail;
    this.items.push(item);
    if (this.items.length > this.limit) this.items.shift();
    return item;
  }

  get last() {
    return this.items[this.items.length - 1] ?? null;
  }

  toJSON() {
    return [...this.items];
  }
}
