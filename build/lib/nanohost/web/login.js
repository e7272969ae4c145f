"use strict";
// Log in with fetch so a wrong password shows its error here instead of leaving the page.
document.getElementById("login").addEventListener("submit", async (event) => {
  event.preventDefault();
  const error = document.getElementById("error");
  const button = event.target.querySelector("button");
  error.hidden = true;
  button.disabled = true;
  try {
    const response = await fetch("/web/login", {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Nanohost": "1" },
      body: JSON.stringify({ password: document.getElementById("password").value }),
    });
    if (response.ok) {
      location.replace("/");
      return;
    }
    const body = await response.json().catch(() => ({}));
    error.textContent = body.error || `login failed (${response.status})`;
  } catch (exc) {
    error.textContent = `cannot reach the host: ${exc.message}`;
  } finally {
    button.disabled = false;
  }
  error.hidden = false;
});
