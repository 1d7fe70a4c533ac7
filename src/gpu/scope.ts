/**
 * Tensor lifetimes: `using`, scopes, and the one ownership rule every `forward` follows.
 *
 * ## The ownership rule
 *
 * 1. **A function borrows the tensors it is given.** `forward(x, options)` (and every op) never
 *    disposes, keeps or returns its arguments, the tensors inside its options included
 *    (`residual`, `skip`, `temb`, the text context, …). The caller still owns them afterwards.
 * 2. **A function returns fresh tensors, and the caller owns them**: a `Tensor`, or an array or a
 *    plain object of tensors (the U-Net's down blocks return their skip outputs as an array). The
 *    caller frees them with `dispose()`, a `using` declaration, or an enclosing scope.
 * 3. **Intermediates die with their scope.** Inside a function, a value read by the rest of the
 *    block is a `using` declaration; a section whose intermediates should be freed as soon as its
 *    result exists runs in `rt.scope(() => …)`: everything allocated inside is freed when it
 *    returns, except what it returns. No hand-written `dispose()` trail, no `if (h !== x)`: a
 *    scope never frees a tensor that was made before it, so `const y = cond ? cast(x) : x` needs no
 *    bookkeeping.
 * 4. **Long-lived tensors are kept explicitly.** Weights, caches and state that outlive the call
 *    are created outside any scope or passed to `rt.keep()`. Model loaders keep their weights.
 * 5. **Hooks run in their owner's scope and see borrowed tensors.** A model calls a user's
 *    callback (`capture`, `attentionProbs`) through {@link bindScope}, so a tensor the callback
 *    allocates (a copy it keeps) belongs to the code that passed the callback in, not to the
 *    model's scopes. A tensor handed to a callback is borrowed: record work on it (`read()` records
 *    its copy at once) but do not keep it, unless the documentation hands it over (the U-Net's
 *    `attentionProbs` hook owns its tensors: the model `keep`s them first).
 *
 * Freeing is stream-ordered (see `pool.ts`): work already recorded still sees the data, so a scope
 * may end before the GPU has run what it recorded.
 *
 * ## Scopes
 *
 * `rt.scope(fn)` (or {@link tensorScope}) runs `fn` and frees every tensor allocated while it runs
 * except those reachable from its result through arrays, plain objects, `Map`s and `Set`s (for a
 * view, the tensor that owns its storage is kept). Scopes nest: what an inner scope returns moves to
 * the enclosing scope, which frees it unless it returns it too. Tensors created before the scope,
 * or outside it, are never touched. An `async` `fn` keeps its scope across `await`s (the scope
 * follows the async context, so concurrent work on the event loop does not land in it) and frees it
 * when its promise settles. If `fn` throws, everything it allocated is freed.
 *
 * @example
 * ```ts
 * import { Runtime } from "@denoise/sd/gpu";
 * import { binary, unary } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * using x = rt.upload(new Float32Array([1, -2, 3]), [3]);
 * using y = rt.scope(() => {
 *   const a = unary(x, "silu"); // freed when the scope ends
 *   return binary(a, x, { op: "mul" }); // returned: the caller owns it
 * });
 * console.log(await y.read());
 * ```
 *
 * @module
 */
import { AsyncLocalStorage } from "node:async_hooks";
import { Tensor } from "./tensor.ts";

/** One open (or closed) scope: the tensors allocated in it that are still alive. */
class Scope {
  readonly tensors = new Set<Tensor>();
  closed = false;
  constructor(readonly parent: Scope | undefined) {}
}

const active = new AsyncLocalStorage<Scope>();
/** The scope each tracked tensor belongs to. */
const ownerOf = new WeakMap<Tensor, Scope>();
/** Views that own their base tensor (a view returned from a scope with no enclosing scope). */
const heldBase = new WeakMap<Tensor, Tensor>();

/** The innermost scope still open (a callback may run after the scope that made it closed). */
function openScope(): Scope | undefined {
  let s = active.getStore();
  while (s?.closed) s = s.parent;
  return s;
}

function nearestOpen(s: Scope | undefined): Scope | undefined {
  while (s?.closed) s = s.parent;
  return s;
}

/**
 * Registers a freshly allocated tensor with the innermost open scope (no-op outside scopes).
 * Called by the runtime for every tensor it allocates.
 */
export function trackTensor(t: Tensor): void {
  const s = openScope();
  if (!s) return;
  s.tensors.add(t);
  ownerOf.set(t, s);
}

/** Called by `Tensor.dispose()`: forgets the tensor's scope and frees a base it holds. */
export function releaseTensor(t: Tensor): void {
  const s = ownerOf.get(t);
  if (s) {
    s.tensors.delete(t);
    ownerOf.delete(t);
  }
  const base = heldBase.get(t);
  if (base) {
    heldBase.delete(t);
    base.dispose();
  }
}

/** Every tensor reachable from `value` through arrays, plain objects, Maps and Sets. */
function tensorsIn(value: unknown, out = new Set<Tensor>(), seen = new Set<object>()): Set<Tensor> {
  if (value instanceof Tensor) {
    out.add(value);
    return out;
  }
  if (typeof value !== "object" || value === null || seen.has(value)) return out;
  seen.add(value);
  if (Array.isArray(value) || value instanceof Set) {
    for (const v of value) tensorsIn(v, out, seen);
  } else if (value instanceof Map) {
    for (const [k, v] of value) {
      tensorsIn(k, out, seen);
      tensorsIn(v, out, seen);
    }
  } else {
    const proto = Object.getPrototypeOf(value);
    if (proto === Object.prototype || proto === null) {
      for (const v of Object.values(value)) tensorsIn(v, out, seen);
    }
  }
  return out;
}

/** Ends `s`: what `result` reaches moves to the enclosing scope (or to the caller); the rest is freed. */
function close(s: Scope, result: unknown): void {
  s.closed = true;
  const parent = nearestOpen(s.parent);
  const returned = tensorsIn(result);
  for (const t of returned) {
    const base = t.base;
    if (ownerOf.get(base) !== s) continue;
    s.tensors.delete(base);
    if (parent) {
      parent.tensors.add(base);
      ownerOf.set(base, parent);
    } else {
      ownerOf.delete(base);
      // only a view came back: it owns the storage now (disposing it frees its base)
      if (t !== base && !returned.has(base)) heldBase.set(t, base);
    }
  }
  const dead = [...s.tensors];
  s.tensors.clear();
  for (const t of dead) t.dispose();
}

/**
 * Runs `fn` in a new tensor scope: every tensor allocated while it runs is freed when it returns
 * (or when its promise settles), except the tensors its result holds, which move to the enclosing
 * scope (or, outside any scope, to the caller). See the module documentation for the rules.
 *
 * @example
 * ```ts
 * import { Runtime, tensorScope } from "@denoise/sd/gpu";
 * import { unary } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * using x = rt.upload(new Float32Array([0.5, 1.5]), [2]);
 * using y = tensorScope(() => unary(unary(x, "silu"), "gelu")); // the silu output is freed
 * console.log(await y.read());
 * ```
 */
export function tensorScope<T>(fn: () => T): T {
  const s = new Scope(openScope());
  let result: T;
  try {
    result = active.run(s, fn);
  } catch (e) {
    close(s, undefined);
    throw e;
  }
  if (result instanceof Promise) {
    return result.then(
      (v) => (close(s, v), v),
      (e) => {
        close(s, undefined);
        throw e;
      },
    ) as T;
  }
  close(s, result);
  return result;
}

/**
 * Takes the tensors `value` holds (a tensor, or arrays / plain objects / Maps / Sets of them) out
 * of their scopes: no scope frees them; whoever holds them disposes them. Returns `value`.
 *
 * @example
 * ```ts
 * import { keepTensors, Runtime, tensorScope } from "@denoise/sd/gpu";
 * const rt = await Runtime.create();
 * const cache: { ones?: import("@denoise/sd/gpu").Tensor } = {};
 * tensorScope(() => {
 *   cache.ones = keepTensors(rt.upload(new Float32Array([1, 1]), [2])); // survives the scope
 * });
 * cache.ones!.dispose();
 * ```
 */
export function keepTensors<T>(value: T): T {
  for (const t of tensorsIn(value)) {
    const base = t.base;
    const s = ownerOf.get(base);
    if (!s) continue;
    s.tensors.delete(base);
    ownerOf.delete(base);
  }
  return value;
}

/**
 * Binds `fn` to the scope that is current now: when it is called later, from inside other scopes,
 * the tensors it allocates belong to this scope (or to no scope), not to the scope of its caller.
 * Models wrap user callbacks with it at their entry.
 *
 * @example
 * ```ts
 * import { bindScope, Runtime, type Tensor } from "@denoise/sd/gpu";
 * const rt = await Runtime.create();
 * const kept: Tensor[] = [];
 * const hook = bindScope((t: Tensor) => {
 *   const copy = rt.empty(t.shape, t.dtype);
 *   rt.copy(t, copy);
 *   kept.push(copy); // not freed when the scope below ends
 * });
 * rt.scope(() => hook(rt.upload(new Float32Array([1, 2]), [2])));
 * console.log(await kept[0].read());
 * ```
 */
export function bindScope<A extends unknown[], R>(fn: (...args: A) => R): (...args: A) => R {
  const s = active.getStore();
  return (...args) => active.run(s as Scope, () => fn(...args));
}

/** One step of a {@link chain}: reads a tensor, returns a fresh one (or its input, unchanged). */
export type ChainStep = (t: Tensor) => Tensor;

/**
 * Runs `steps` one after the other on `x` (`steps[0](x)`, then the next on that result, …) and
 * returns the last result; each intermediate is freed as soon as the step after it has been
 * recorded, so at most two live at a time. A tensor `x` is borrowed (never freed); a function `x`
 * makes the first tensor, which is then freed like any intermediate. A step returns a fresh
 * tensor (not a view), or its input unchanged (a layer that is absent).
 *
 * @example
 * ```ts
 * import { chain, Runtime } from "@denoise/sd/gpu";
 * import { unary } from "@denoise/sd/ops";
 * const rt = await Runtime.create();
 * using x = rt.upload(new Float32Array([-1, 1]), [2]);
 * using y = chain(
 *   x,
 *   (t) => unary(t, "silu"), // [2]
 *   (t) => unary(t, "relu"), // [2]
 * );
 * ```
 */
export function chain(start: Tensor | (() => Tensor), ...steps: ChainStep[]): Tensor {
  const x = start instanceof Tensor ? start : undefined;
  let h = x ?? (start as () => Tensor)();
  for (const step of steps) {
    let next: Tensor;
    try {
      next = step(h);
    } catch (e) {
      if (h !== x) h.dispose();
      throw e;
    }
    if (h !== x && h !== next) h.dispose();
    h = next;
  }
  return h;
}

/** Whether `t` (its storage) is owned by an open scope, which will free it when it ends. */
export function isScoped(t: Tensor): boolean {
  return ownerOf.get(t.base)?.closed === false;
}
