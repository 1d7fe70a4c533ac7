/**
 * One loaded tiny pipeline per model and load options in a test process, shared by the tests of a
 * file (loading compiles kernels and uploads weights: seconds on the software adapter).
 *
 * @module
 */
import { loadPipeline, type LoadPipelineOptions, type Pipeline } from "../../src/pipeline/load.ts";
import { testRuntime } from "../gpu_util.ts";
import { modelDir } from "../util.ts";

const pipes = new Map<string, Promise<Pipeline>>();

/** The tiny `model` (a fixture name such as `tiny-sd15`) loaded once with `options`. */
export function testPipeline(
  model: string,
  options: Pick<LoadPipelineOptions, "dtype" | "vaeEncoder">,
): Promise<Pipeline> {
  const key = `${model} ${options.dtype} ${options.vaeEncoder ?? false}`;
  let p = pipes.get(key);
  if (!p) {
    p = testRuntime().then((runtime) => loadPipeline(modelDir(model)!, { ...options, runtime }));
    pipes.set(key, p);
  }
  return p;
}
