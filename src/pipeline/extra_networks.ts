/**
 * A1111's extra-network prompt syntax: `<lora:NAME>`, `<lora:NAME:WEIGHT>`,
 * `<lora:NAME:TE_WEIGHT:UNET_WEIGHT>` or `<lora:NAME:te=…:unet=…>` (`lyco` is an alias of `lora`),
 * found with A1111's pattern `<(\w+):([^>]+)>` and removed from the text that gets tokenized.
 *
 * @module
 */

/** A `<lora:…>` tag of a prompt. */
export interface LoraTag {
  /** The name as written: a file name (without `.safetensors`) or a LoRA's alias. */
  name: string;
  /** The text encoder's multiplier (default 1). */
  te: number;
  /** The U-Net's multiplier (default: `te`). */
  unet: number;
  /** The tag as written. */
  tag: string;
}

/** A prompt with its extra-network tags taken out. */
export interface ParsedExtraNetworks {
  /** The prompt without the tags (what the tokenizer sees). */
  text: string;
  /** The `<lora:…>` tags in order. */
  loras: LoraTag[];
}

const EXTRA_NETWORK = /<(\w+):([^>]+)>/g;

function weight(tag: string, what: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  const v = Number(value);
  if (value.trim() === "" || !Number.isFinite(v)) {
    throw new Error(
      `${tag}: the ${what} "${value}" is not a number: write it like <lora:name:0.8>`,
    );
  }
  return v;
}

/**
 * Takes A1111's extra-network tags out of a prompt. `<lora:…>` and `<lyco:…>` tags become
 * {@link LoraTag}s; any other network type (`<hypernet:…>`) is an error, since denoise does not
 * run it and would otherwise tokenize the tag as words.
 *
 * @example
 * ```ts
 * import { parseExtraNetworks } from "@denoise/sd/pipeline";
 * const { text, loras } = parseExtraNetworks("a castle <lora:ghibli:0.7>, sunset");
 * // text: "a castle , sunset"; loras: [{ name: "ghibli", te: 0.7, unet: 0.7, tag: "<lora:ghibli:0.7>" }]
 * ```
 */
export function parseExtraNetworks(prompt: string): ParsedExtraNetworks {
  const loras: LoraTag[] = [];
  const text = prompt.replace(EXTRA_NETWORK, (tag: string, kind: string, args: string) => {
    if (kind !== "lora" && kind !== "lyco") {
      throw new Error(
        `the prompt's ${tag}: denoise runs LoRAs (<lora:name:weight>) but not "${kind}" networks; ` +
          `remove the tag`,
      );
    }
    const positional: string[] = [];
    const named: Record<string, string> = {};
    for (const item of args.split(":")) {
      const eq = item.indexOf("=");
      if (eq >= 0) named[item.slice(0, eq)] = item.slice(eq + 1);
      else positional.push(item);
    }
    const name = positional[0]?.trim();
    if (!name) throw new Error(`the prompt's ${tag} names no LoRA: write <lora:name:weight>`);
    if (positional.length > 3 || named.dyn !== undefined) {
      throw new Error(
        `${tag}: A1111's dyn (dynamic rank) is not supported; use <lora:name:te:unet>`,
      );
    }
    const unknown = Object.keys(named).filter((k) => k !== "te" && k !== "unet");
    if (unknown.length > 0) {
      throw new Error(`${tag}: unknown setting ${unknown[0]}= (te= and unet= exist)`);
    }
    const te = weight(tag, "weight", named.te ?? positional[1], 1);
    const unet = weight(tag, "U-Net weight", named.unet ?? positional[2], te);
    loras.push({ name, te, unet, tag });
    return "";
  });
  return { text, loras };
}
