"""Executes a notebook on Deno's Jupyter kernel and writes the executed copy, keeping every output.

Why not `jupyter nbconvert --execute`: Deno's kernel (2.9) publishes what a cell prints or displays
(`stream`, `display_data`, and even the `execute_result` of its last expression) from a queue that
a separate loop drains, while the execute handler sends `execute_reply` and `status: idle` itself,
without waiting for that queue. Under load the idle status overtakes the cell's last outputs.
nbclient stops collecting a cell's outputs at its idle status, so those outputs vanish: the cell
records no output and no error (the seed-gallery cell of 01_quickstart did so in 2 of 4 CI runs).

The queue is first-in first-out, so after each cell this runner executes a barrier,
`console.log(<token>)`, which goes through the same queue: once the token arrives, everything the
cell emitted has been published. Outputs that arrive after the cell's idle status, or that the
kernel stamped with the barrier's parent header because the barrier request had already arrived,
are kept in the cell they came from. Nothing is retried and no delay is guessed.

usage: python3 .ci/run_notebook.py NOTEBOOK.ipynb OUTPUT.ipynb [--timeout SECONDS]
Exits 1 when a cell raised (the executed copy is still written), 2 on a kernel failure.
"""
import json
import os
import queue
import sys
import time
import uuid

from jupyter_client.manager import start_new_kernel

OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error")


def to_output(msg):
    """The nbformat v4 output of an iopub message."""
    kind, c = msg["msg_type"], msg["content"]
    if kind == "stream":
        return {"output_type": "stream", "name": c["name"], "text": c["text"]}
    if kind == "error":
        return {"output_type": "error", "ename": c["ename"], "evalue": c["evalue"],
                "traceback": c.get("traceback", [])}
    out = {"output_type": kind, "data": c.get("data", {}), "metadata": c.get("metadata", {})}
    if kind == "execute_result":
        out["execution_count"] = c.get("execution_count")
    return out


def add_output(outputs, msg):
    out = to_output(msg)
    last = outputs[-1] if outputs else None
    if out["output_type"] == "stream" and last and last["output_type"] == "stream" \
            and last["name"] == out["name"]:
        last["text"] += out["text"]  # as nbclient: consecutive stream chunks form one output
    else:
        outputs.append(out)


class Runner:
    def __init__(self, cwd, timeout):
        self.km, self.kc = start_new_kernel(kernel_name="deno", cwd=cwd, startup_timeout=120)
        self.timeout = timeout

    def close(self):
        self.kc.stop_channels()
        self.km.shutdown_kernel(now=True)

    def _reply(self, msg_id, deadline):
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("no execute_reply")
            try:
                reply = self.kc.get_shell_msg(timeout=min(left, 1.0))
            except queue.Empty:
                if not self.km.is_alive():
                    raise RuntimeError("the kernel died")
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                return reply

    def run_cell(self, code):
        """Executes `code`; returns (outputs, execution_count, failed)."""
        deadline = time.monotonic() + self.timeout
        cell_id = self.kc.execute(code, allow_stdin=False)
        reply = self._reply(cell_id, deadline)
        # The barrier: its output is queued behind everything the cell emitted.
        token = f"denoise-barrier-{uuid.uuid4()}"
        barrier_id = self.kc.execute(f'console.log("{token}")', store_history=False,
                                     allow_stdin=False)
        outputs, done = [], False
        while not done:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError("the cell's outputs did not all arrive")
            try:
                msg = self.kc.get_iopub_msg(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            parent = msg["parent_header"].get("msg_id")
            if msg["msg_type"] not in OUTPUT_TYPES or parent not in (cell_id, barrier_id):
                continue
            if parent == barrier_id and msg["msg_type"] == "stream" and token in msg["content"]["text"]:
                rest = msg["content"]["text"].replace(token + "\n", "", 1).replace(token, "", 1)
                if rest:
                    add_output(outputs, {**msg, "content": {**msg["content"], "text": rest}})
                done = True
                continue
            add_output(outputs, msg)
        self._reply(barrier_id, deadline)
        failed = reply["content"].get("status") != "ok" or any(
            o["output_type"] == "error" for o in outputs)
        return outputs, reply["content"].get("execution_count"), failed


def main():
    args = sys.argv[1:]
    timeout = 600
    if "--timeout" in args:
        i = args.index("--timeout")
        timeout = int(args[i + 1])
        del args[i:i + 2]
    src, dst = args
    nb = json.load(open(src))
    runner = Runner(os.path.dirname(os.path.abspath(src)), timeout)
    status = 0
    try:
        for i, cell in enumerate(nb["cells"]):
            if cell["cell_type"] != "code":
                continue
            outputs, count, failed = runner.run_cell("".join(cell["source"]))
            cell["outputs"], cell["execution_count"] = outputs, count
            if failed:
                err = next((o for o in outputs if o["output_type"] == "error"), None)
                what = f"{err['ename']}: {err['evalue']}" if err else "the kernel reported an error"
                print(f"{src}: cell {i} failed: {what}", file=sys.stderr)
                status = 1
                break
    except (TimeoutError, RuntimeError) as e:
        print(f"{src}: {e}", file=sys.stderr)
        status = 2
    finally:
        runner.close()
        json.dump(nb, open(dst, "w"), indent=1, ensure_ascii=False)
    sys.exit(status)


if __name__ == "__main__":
    main()
