import { useEffect, useState } from "preact/hooks";
import { ApiError, errorText } from "../api";
import { login } from "../session";
import { Field, markReady } from "../components/ui";

export function Login(props: { unavailable: boolean }) {
  const [email, setEmail] = useState("");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  useEffect(markReady, []);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      // The app leaves this page once the session is set.
      await login(email, password);
    } catch (err) {
      setError(
        err instanceof ApiError && err.missing
          ? "Sign-in is not available: this manager has no admin sessions yet."
          : errorText(err),
      );
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="login">
      <form class="card" onSubmit={submit} data-testid="login-form">
        <h1>run-dat-sheesh</h1>
        <p class="muted">Admin console</p>
        {props.unavailable ? (
          <p class="notice">This manager has no admin sessions yet; sign-in will fail.</p>
        ) : null}
        <Field label="Email" name="email" type="email" autocomplete="username" required value={email} onInput={setEmail} />
        <Field
          label="Password"
          name="password"
          type="password"
          autocomplete="current-password"
          required
          value={password}
          onInput={setPassword}
        />
        {error ? <p class="error" role="alert" data-testid="login-error">{error}</p> : null}
        <button class="primary" type="submit" disabled={busy}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
      </form>
    </main>
  );
}
