// Terminal tab (docs/api.md "Terminals"): a WebSocket onto a login shell in the guest. The screen
// is plain text: escape sequences are dropped, so full-screen programs show as their text only,
// but a shell, its prompt, line editing and program output read as they would in a terminal.
// Guest output is rendered as text only, never as HTML.
import { useEffect, useRef, useState } from "preact/hooks";

const COLS = 100;
const ROWS = 30;
/// What the screen keeps (characters); older text scrolls away.
const KEEP = 200_000;

// CSI, OSC and two-character escape sequences, and the bell.
const ESCAPES = /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]|\x07/g;

/// Applies terminal output to the screen text: escapes dropped, backspace erases, CR-LF is a
/// new line and a lone CR returns to the start of the line.
export function applyOutput(screen: string, chunk: string): string {
  let out = screen;
  for (const ch of chunk.replace(ESCAPES, "")) {
    if (ch === "\b") {
      if (out.length > 0 && !out.endsWith("\n")) out = out.slice(0, -1);
    } else if (ch === "\r") {
      continue;
    } else {
      out += ch;
    }
  }
  return out.length > KEEP ? out.slice(out.length - KEEP) : out;
}

const KEYS: Record<string, string> = {
  Enter: "\r",
  Backspace: "\x7f",
  Tab: "\t",
  Escape: "\x1b",
  ArrowUp: "\x1b[A",
  ArrowDown: "\x1b[B",
  ArrowRight: "\x1b[C",
  ArrowLeft: "\x1b[D",
  Home: "\x1b[H",
  End: "\x1b[F",
  Delete: "\x1b[3~",
};

/// The bytes a key press sends, if any.
function keyBytes(e: KeyboardEvent): string | null {
  if (e.ctrlKey && e.key.length === 1) {
    const c = e.key.toUpperCase().charCodeAt(0);
    if (c >= 64 && c <= 95) return String.fromCharCode(c - 64);
  }
  if (KEYS[e.key]) return KEYS[e.key];
  if (e.key.length === 1 && !e.metaKey && !e.altKey) return e.key;
  return null;
}

export function TerminalBox(props: { id: string; disabled: boolean }) {
  const [screen, setScreen] = useState("");
  const [status, setStatus] = useState("connecting");
  const [generation, setGeneration] = useState(0);
  const sock = useRef<WebSocket | null>(null);
  const pre = useRef<HTMLPreElement>(null);

  useEffect(() => {
    if (props.disabled) return;
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    const ws = new WebSocket(`${scheme}://${location.host}/v1/vms/${props.id}/pty?cols=${COLS}&rows=${ROWS}`);
    ws.binaryType = "arraybuffer";
    const decoder = new TextDecoder();
    sock.current = ws;
    setScreen("");
    setStatus("connecting");
    ws.onopen = () => {
      setStatus("connected");
      pre.current?.focus();
    };
    ws.onmessage = (m) => {
      if (typeof m.data === "string") {
        const exit = JSON.parse(m.data) as { exitCode: number; error?: string };
        setStatus(exit.error ? `could not start: ${exit.error}` : `exited with ${exit.exitCode}`);
        return;
      }
      const text = decoder.decode(m.data as ArrayBuffer, { stream: true });
      setScreen((s) => applyOutput(s, text));
    };
    ws.onclose = () => setStatus((s) => (s === "connected" || s === "connecting" ? "disconnected" : s));
    return () => ws.close();
  }, [props.id, props.disabled, generation]);

  useEffect(() => {
    if (pre.current) pre.current.scrollTop = pre.current.scrollHeight;
  }, [screen]);

  const send = (text: string) => {
    if (sock.current?.readyState === WebSocket.OPEN) sock.current.send(new TextEncoder().encode(text));
  };
  const onKey = (e: KeyboardEvent) => {
    const bytes = keyBytes(e);
    if (bytes === null) return;
    e.preventDefault();
    send(bytes);
  };
  const onPaste = (e: ClipboardEvent) => {
    const text = e.clipboardData?.getData("text") ?? "";
    e.preventDefault();
    send(text.replace(/\r?\n/g, "\r"));
  };

  if (props.disabled) return null;
  return (
    <div data-testid="terminal">
      <div class="row">
        <span class="muted small" data-testid="terminal-status">
          {status}
        </span>
        {status !== "connected" && status !== "connecting" ? (
          <button onClick={() => setGeneration((g) => g + 1)} data-testid="terminal-reconnect">
            Reconnect
          </button>
        ) : null}
      </div>
      <pre
        ref={pre}
        class="output terminal"
        tabIndex={0}
        onKeyDown={onKey}
        onPaste={onPaste}
        data-testid="terminal-output"
      >
        {screen}
      </pre>
    </div>
  );
}
