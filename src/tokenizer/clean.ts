/**
 * Text clean-up before CLIP's BPE, as transformers' `CLIPTokenizer` does it with ftfy installed:
 * `whitespace_clean(ftfy.fix_text(text)).lower()`.
 *
 * {@link fixText} reproduces ftfy 6's default fixes that matter for prompts: HTML entities (unless
 * the text holds a literal `<`), C1 control characters read as Windows-1252, Latin ligatures,
 * fullwidth/halfwidth forms, curly quotes, line breaks, lone surrogates, terminal escapes, control
 * characters and NFC, repeated until nothing changes. It does not detect or repair mojibake
 * (`fix_encoding`: text that was UTF-8 decoded as Latin-1 or Windows-1252, like `cafÃ©`), nor
 * split texts of over a million characters into segments as ftfy does.
 *
 * @module
 */
import { unescapeHtml, WINDOWS_1252_C1 } from "./html_entities.ts";

/**
 * Python's `\s` for `str` patterns, as a regex character-class body (JS `\s` differs: it has
 * U+FEFF but lacks U+001C–U+001F and U+0085).
 *
 * @example
 * ```ts
 * import { PY_WHITESPACE } from "./clean.ts";
 * new RegExp(`[${PY_WHITESPACE}]`, "u").test("\x85"); // true
 * ```
 */
export const PY_WHITESPACE =
  "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";

const WHITESPACE_RUN = new RegExp(`[${PY_WHITESPACE}]+`, "gu");
const EDGE_SPACE = /^ | $/g;

/** ftfy's `LIGATURES`: Latin typographic ligatures and legacy digraphs, taken apart. */
const LIGATURES = new Map<string, string>([
  ["Ĳ", "IJ"],
  ["ĳ", "ij"],
  ["ŉ", "ʼn"],
  ["Ǳ", "DZ"],
  ["ǲ", "Dz"],
  ["ǳ", "dz"],
  ["Ǆ", "DŽ"],
  ["ǅ", "Dž"],
  ["ǆ", "dž"],
  ["Ǉ", "LJ"],
  ["ǈ", "Lj"],
  ["ǉ", "lj"],
  ["Ǌ", "NJ"],
  ["ǋ", "Nj"],
  ["ǌ", "nj"],
  ["ﬀ", "ff"],
  ["ﬁ", "fi"],
  ["ﬂ", "fl"],
  ["ﬃ", "ffi"],
  ["ﬄ", "ffl"],
  ["ﬅ", "ſt"],
  ["ﬆ", "st"],
]);
const LIGATURE_RE = new RegExp(`[${[...LIGATURES.keys()].join("")}]`, "gu");

/** ftfy's `WIDTH_MAP`: U+3000 → space, and NFKC of every changed character in U+FF01–U+FFEF. */
function buildWidthMap(): Map<string, string> {
  const map = new Map<string, string>([["\u3000", " "]]);
  for (let cp = 0xff01; cp < 0xfff0; cp++) {
    const ch = String.fromCodePoint(cp);
    const alt = ch.normalize("NFKC");
    if (alt !== ch) map.set(ch, alt);
  }
  return map;
}
const WIDTH_MAP = buildWidthMap();
const WIDTH_RE = /[\u3000\uff01-\uffef]/g;

const C1_RE = /[\x80-\x9f]/g;
const SINGLE_QUOTE_RE = /[\u02bc\u2018-\u201b]/g;
const DOUBLE_QUOTE_RE = /[\u201c-\u201f]/g;
const LINE_BREAK_RE = /\r\n|[\r\u2028\u2029\x85]/g;
// Python's `\d` in ftfy's ANSI_RE matches any Unicode decimal digit.
// deno-lint-ignore no-control-regex
const ANSI_RE = /\x1b\[(?:\p{Nd}|;)*[a-zA-Z]/gu;
// deno-lint-ignore no-control-regex
const CONTROL_RE = /[\x00-\x08\x0b\x0e-\x1f\x7f\u206a-\u206f\ufeff\ufff9-\ufffc]/g;

/** One pass of ftfy's `fix_and_explain` loop, without the mojibake repair. */
function fixOnce(text: string, unescape: boolean): string {
  if (unescape) text = unescapeHtml(text);
  text = text.replace(C1_RE, (c) => WINDOWS_1252_C1[c.charCodeAt(0) - 0x80]);
  text = text.replace(LIGATURE_RE, (c) => LIGATURES.get(c) ?? c);
  text = text.replace(WIDTH_RE, (c) => WIDTH_MAP.get(c) ?? c);
  text = text.replace(DOUBLE_QUOTE_RE, '"').replace(SINGLE_QUOTE_RE, "'");
  text = text.replace(LINE_BREAK_RE, "\n");
  text = text.toWellFormed();
  text = text.replace(ANSI_RE, "");
  text = text.replace(CONTROL_RE, "");
  return text.normalize("NFC");
}

/**
 * ftfy's `fix_text` with its default configuration, less the mojibake repair: works line by
 * line; HTML entities are decoded until a line holds a literal `<`, and from that line on no more;
 * each line's fixes repeat until the line stops changing (so `&amp;lt;` becomes `<`).
 *
 * @example
 * ```ts
 * import { fixText } from "./clean.ts";
 * fixText("“ﬂuﬃest” ＡＢＣ &amp; more"); // "\"fluffiest\" ABC & more"
 * fixText("<b>&amp;</b>"); // "<b>&amp;</b>" (looks like HTML: entities stay)
 * ```
 */
export function fixText(text: string): string {
  let unescape = true;
  let out = "";
  let pos = 0;
  while (pos < text.length) {
    let end = text.indexOf("\n", pos) + 1;
    if (end === 0) end = text.length;
    let segment = text.slice(pos, end);
    if (segment.includes("<")) unescape = false;
    for (;;) {
      const fixed = fixOnce(segment, unescape);
      if (fixed === segment) break;
      segment = fixed;
    }
    out += segment;
    pos = end;
  }
  return out;
}

/**
 * CLIP's `whitespace_clean`: every run of (Python) whitespace becomes one space, then the ends
 * are trimmed.
 *
 * @example
 * ```ts
 * import { whitespaceClean } from "./clean.ts";
 * whitespaceClean("  a\t\n photo\u3000 "); // "a photo"
 * ```
 */
export function whitespaceClean(text: string): string {
  return text.replace(WHITESPACE_RUN, " ").replace(EDGE_SPACE, "");
}

/**
 * The whole clean-up the reference applies before pre-tokenizing: {@link fixText}, then
 * {@link whitespaceClean}, then lower case.
 *
 * @example
 * ```ts
 * import { cleanText } from "./clean.ts";
 * cleanText("  A Photo of an ＡＳＴＲＯＮＡＵＴ  "); // "a photo of an astronaut"
 * ```
 */
export function cleanText(text: string): string {
  return whitespaceClean(fixText(text)).toLowerCase();
}
