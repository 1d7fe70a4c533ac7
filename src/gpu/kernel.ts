/**
 * WGSL templates and the compute pipeline cache. Each op family has one Jinja template,
 * `kernels/<name>.wgsl.jinja`, rendered with `@huggingface/jinja` from typed parameters (dtype,
 * workgroup and tile sizes, fused epilogues). Shapes never enter a template: they travel in uniforms.
 *
 * The templates ship inside the module graph: `deno task kernels` turns each into a string module
 * (`kernels/<name>.wgsl.ts`, indexed by `kernels/mod.ts`), so the package reads no file and fetches
 * nothing for its own kernels. After editing a `.jinja` file, run `deno task kernels`; the tests
 * fail while a generated module is out of date.
 *
 * @module
 */
import { Template } from "@huggingface/jinja";
import { KERNEL_SOURCES } from "../../kernels/mod.ts";
import { ACTIVATIONS_WGSL } from "./wgsl_lib.ts";

/** A template parameter value. */
export type ParamValue = string | number | boolean;

/** The typed cache key of a compute pipeline: the kernel family and its template parameters. */
export interface PipelineKey<P extends { [k: string]: ParamValue } = { [k: string]: ParamValue }> {
  /** The template's stem in `kernels/` (for example `elementwise`). */
  kernel: string;
  /** The template variables; every variant is one value of this object. */
  params: P;
}

/**
 * The canonical string of a pipeline key (parameters sorted by name).
 *
 * @example
 * ```ts
 * import { keyString } from "@denoise/sd/gpu";
 * keyString({ kernel: "elementwise", params: { op: "add", dtype: "f32" } });
 * // 'elementwise{dtype=f32,op=add}'
 * ```
 */
export function keyString(key: PipelineKey): string {
  const p = Object.keys(key.params).sort().map((k) => `${k}=${key.params[k]}`).join(",");
  return `${key.kernel}{${p}}`;
}

const templateText = new Map<string, string>(Object.entries(KERNEL_SOURCES));
const compiled = new Map<string, Template>();

/**
 * Checks that templates are available by stem: the package's own are always (they are compiled into
 * the module graph), others must have been registered with {@link registerTemplate}.
 *
 * @example
 * ```ts
 * import { loadTemplates } from "@denoise/sd/gpu";
 * await loadTemplates(["elementwise", "gemm"]);
 * ```
 */
export function loadTemplates(names: readonly string[]): Promise<void> {
  const missing = names.filter((n) => !templateText.has(n));
  if (missing.length > 0) {
    return Promise.reject(
      new Error(
        `denoise: no kernel template ${missing.map((n) => `"${n}"`).join(", ")}: the package ` +
          `has ${
            [...Object.keys(KERNEL_SOURCES)].join(", ")
          }; register others with registerTemplate`,
      ),
    );
  }
  return Promise.resolve();
}

/**
 * Registers template text under a stem without reading a file (custom kernels, tests).
 *
 * @example
 * ```ts
 * import { registerTemplate } from "@denoise/sd/gpu";
 * registerTemplate("fill", "@group(0) @binding(1) var<storage, read_write> y: array<f32>;\n" +
 *   "@compute @workgroup_size(64) fn main(@builtin(global_invocation_id) i: vec3<u32>) { y[i.x] = 1.0; }");
 * ```
 */
export function registerTemplate(name: string, text: string): void {
  templateText.set(name, text);
  compiled.delete(name);
}

/**
 * Renders a kernel template with its parameters, plus `enable_f16` (true when any param is "f16"
 * or a comma list naming it)
 * and `activations` (the shared WGSL activation functions of `wgsl_lib.ts`).
 *
 * @example
 * ```ts
 * import { loadTemplates, renderKernel } from "@denoise/sd/gpu";
 * await loadTemplates(["elementwise"]);
 * const params = { mode: "unary", op: "silu", dtype: "f32", out_dtype: "f32", terms: 1, wg: 256 };
 * const wgsl = renderKernel({ kernel: "elementwise", params });
 * ```
 */
export function renderKernel(key: PipelineKey): string {
  const text = templateText.get(key.kernel);
  if (text === undefined) {
    throw new Error(
      `denoise: kernel template "${key.kernel}" is not loaded; call loadTemplates(["${key.kernel}"])`,
    );
  }
  let tpl = compiled.get(key.kernel);
  if (!tpl) compiled.set(key.kernel, tpl = new Template(text));
  const enableF16 = Object.values(key.params).some((v) =>
    v === "f16" || (typeof v === "string" && v.includes(",") && v.split(",").includes("f16"))
  );
  return tpl.render({ ...key.params, enable_f16: enableF16, activations: ACTIVATIONS_WGSL });
}

/** A compiled pipeline and the rendered source it came from. */
export interface CompiledKernel {
  /** The compute pipeline (layout "auto", entry point `main`). */
  pipeline: GPUComputePipeline;
  /** The WGSL source the template rendered to. */
  source: string;
  /** The key's canonical string, used as label. */
  label: string;
  /** Resolves to an error message when the shader failed to compile, else `undefined`. */
  check: Promise<string | undefined>;
}

/**
 * Formats WGSL compilation messages with the template's name and the offending source lines.
 *
 * @example
 * ```ts
 * import { formatCompileErrors } from "@denoise/sd/gpu";
 * formatCompileErrors("gemm{dtype=f32}", "fn main() {}", []);
 * ```
 */
export function formatCompileErrors(
  label: string,
  source: string,
  messages: readonly GPUCompilationMessage[],
): string {
  const lines = source.split("\n");
  const parts = messages.map((m) => {
    const row = m.lineNum > 0 ? lines[m.lineNum - 1] ?? "" : "";
    const caret = m.linePos > 0 ? " ".repeat(m.linePos - 1) + "^" : "";
    return `  line ${m.lineNum}:${m.linePos}: ${m.type}: ${m.message}\n` +
      (row ? `    ${row}\n    ${caret}` : "");
  });
  const kernel = label.slice(0, label.indexOf("{"));
  return `denoise: WGSL compile error in kernels/${kernel}.wgsl.jinja, rendered as ${label}:\n` +
    parts.join("\n");
}

/**
 * A cache of compiled compute pipelines keyed by {@link PipelineKey}.
 *
 * @example
 * ```ts
 * import { getGpu, loadTemplates, PipelineCache } from "@denoise/sd/gpu";
 * await loadTemplates(["elementwise"]);
 * const cache = new PipelineCache((await getGpu()).device);
 * const params = { mode: "unary", op: "silu", dtype: "f32", out_dtype: "f32", terms: 1, wg: 256 };
 * const k = cache.get({ kernel: "elementwise", params });
 * console.log(await k.check);
 * ```
 */
export class PipelineCache {
  #map = new Map<string, CompiledKernel>();
  /** The same pipelines by the key's parameters in their written order (no sort on a hit). */
  #byOrder = new Map<string, CompiledKernel>();

  /** Creates an empty cache for `device`. */
  constructor(readonly device: GPUDevice) {}

  /** The number of pipelines compiled so far. */
  get size(): number {
    return this.#map.size;
  }

  /** Returns the compiled pipeline for `key`, compiling it on first use. */
  get(key: PipelineKey): CompiledKernel {
    let ordered = key.kernel + "{";
    for (const k in key.params) ordered += k + "=" + key.params[k] + ",";
    const fast = this.#byOrder.get(ordered);
    if (fast) return fast;
    const label = keyString(key);
    const hit = this.#map.get(label);
    if (hit) {
      this.#byOrder.set(ordered, hit);
      return hit;
    }
    const source = renderKernel(key);
    this.device.pushErrorScope("validation");
    const module = this.device.createShaderModule({ code: source, label });
    const pipeline = this.device.createComputePipeline({
      layout: "auto",
      compute: { module, entryPoint: "main" },
      label,
    });
    const scope = this.device.popErrorScope();
    const check = (async () => {
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === "error");
      if (errors.length > 0) return formatCompileErrors(label, source, errors);
      const err = await scope;
      return err ? `denoise: pipeline ${label} failed validation: ${err.message}` : undefined;
    })();
    const entry = { pipeline, source, label, check };
    this.#map.set(label, entry);
    this.#byOrder.set(ordered, entry);
    return entry;
  }
}
