"use strict";
// The waiting room's page: joins the queue, polls the ticket (within its timeout, as
// often as the estimated wait warrants, backing off on errors), and once admitted
// applies with the pass and shows the coupon or the reason there is none. Every text
// that came from the network goes in with textContent, never as HTML.
(() => {
  const room = document.getElementById("room");
  const el = (id) => document.getElementById(id);
  const base = "/v1/campaigns/" + encodeURIComponent(room.dataset.campaign);
  const RETRIED = new Set([0, 425, 429, 500, 502, 503, 504]);
  const OUTCOMES = {
    expired: ["Your place has lapsed", "Join the queue again to get a new place."],
    sold_out: ["Sold out", "Every coupon has been taken."],
    closed: ["The sale is closed", "The campaign no longer takes applications."],
  };
  let token = null;
  let user = null;
  let pollWithinSeconds = 60;
  let failures = 0;

  // The shop hands the bearer token in the fragment (#token=...): browsers never send a
  // fragment to the server, and it is dropped from the address bar once read.
  function takeToken() {
    const found = new URLSearchParams(location.hash.slice(1)).get("token");
    if (location.hash) history.replaceState(null, "", location.pathname + location.search);
    return found;
  }

  function mark(state) {
    const states = room.dataset.states ? room.dataset.states.split(" ") : [];
    if (states[states.length - 1] !== state) states.push(state);
    room.dataset.states = states.join(" ");
    room.dataset.state = state;
  }

  function say(text) {
    el("status").textContent = text;
  }

  function outcome(state, title, detail, reason) {
    mark(state);
    el("place").hidden = true;
    el("outcome").hidden = false;
    el("outcome-title").textContent = title;
    el("outcome-detail").textContent = detail;
    el("outcome-reason").textContent = reason || "";
    el("outcome-reason").hidden = !reason;
    // the one live region announces the outcome; the card below shows it
    say(title + ". " + detail);
    el("status").classList.add("visually-hidden");
  }

  async function call(method, path, extra) {
    const headers = Object.assign({}, extra);
    if (token) headers.authorization = "Bearer " + token;
    const init = { method, headers, cache: "no-store", credentials: "same-origin" };
    if (method === "POST") {
      headers["content-type"] = "application/json";
      init.body = JSON.stringify(user === null ? {} : { userId: user });
    }
    try {
      const response = await fetch(base + path, init);
      const json = await response.json().catch(() => ({}));
      const retryAfter = Number(response.headers.get("retry-after")) || 0;
      return { status: response.status, json, retryAfter };
    } catch (error) {
      return { status: 0, json: { message: String(error) }, retryAfter: 0 };
    }
  }

  // Errors worth retrying are retried with a doubling delay (Retry-After when given),
  // never longer than half the ticket's timeout; any other refusal is final.
  function retryOrStop(answer, again) {
    if (!RETRIED.has(answer.status)) {
      const json = answer.json || {};
      outcome("refused", "Something went wrong", json.message || "Please try again later.", json.reason);
      return;
    }
    failures += 1;
    const backoff = Math.min(1000 * 2 ** failures, pollWithinSeconds * 500);
    const delay = Math.max(answer.retryAfter * 1000, backoff);
    say("Busy; trying again in " + Math.ceil(delay / 1000) + " s…");
    setTimeout(again, delay);
  }

  async function join() {
    say("Joining the queue…");
    const answer = await call("POST", "/queue");
    if (answer.status === 200 || answer.status === 201) return show(answer.json);
    retryOrStop(answer, join);
  }

  async function poll(ticket) {
    const answer = await call("GET", "/queue/" + encodeURIComponent(ticket));
    if (answer.status === 200) return show(answer.json);
    if (answer.status === 404 && answer.json.reason === "unknown_ticket") {
      return outcome("expired", ...OUTCOMES.expired, answer.json.reason);
    }
    retryOrStop(answer, () => poll(ticket));
  }

  function show(view) {
    failures = 0;
    pollWithinSeconds = view.pollWithinSeconds || pollWithinSeconds;
    mark(view.state);
    if (view.state === "waiting") {
      waiting(view);
      setTimeout(() => poll(view.ticket), nextPollMs(view));
    } else if (view.state === "admitted") {
      apply(view.pass);
    } else {
      const [title, detail] = OUTCOMES[view.state] || ["Unexpected answer", ""];
      outcome(view.state, title, detail, view.state);
    }
  }

  // Half the estimated wait, at least a second, and always well inside the timeout
  // after which an unpolled ticket loses its place.
  function nextPollMs(view) {
    const halfWait = ((view.estimatedWaitSeconds || 0) * 1000) / 2;
    return Math.min(pollWithinSeconds * 500, Math.max(1000, halfWait));
  }

  function duration(seconds) {
    if (seconds < 1) return "any moment now";
    if (seconds < 90) return "about " + Math.ceil(seconds) + " s";
    if (seconds < 5400) return "about " + Math.round(seconds / 60) + " min";
    return "about " + Math.round(seconds / 3600) + " h";
  }

  function waiting(view) {
    el("place").hidden = false;
    if (view.position !== undefined) {
      el("position").textContent = String(view.position);
      el("ahead").textContent = String(view.ahead);
    }
    el("wait").textContent = duration(view.estimatedWaitSeconds || 0);
    say(view.position === undefined
      ? "You are in the queue; places are drawn when the sale opens."
      : "You are in the queue: " + view.ahead + " ahead of you.");
  }

  async function apply(pass) {
    el("place").hidden = true;
    say("It is your turn: getting your coupon…");
    const answer = await call("POST", "/applications", { "firstcome-pass": pass });
    const json = answer.json || {};
    if (answer.status === 201) {
      room.dataset.sequence = String(json.sequence);
      const which = json.ordinal > 1 ? " (your coupon number " + json.ordinal + ")" : "";
      return outcome("coupon", "Your coupon", "Coupon " + json.sequence + which + " is yours.");
    }
    if (answer.status === 409 && json.reason === "already_applied") {
      room.dataset.sequence = String((json.sequences || [])[0]);
      return outcome("coupon", "You already have a coupon", "Coupon " + (json.sequences || []).join(", ") + ".");
    }
    if (json.reason === "admission_unconfirmed") {
      // Admitted, not yet confirmed: applying again could take a second coupon.
      return outcome("unconfirmed", "Your coupon is being confirmed", json.message || "", json.reason);
    }
    if (RETRIED.has(answer.status)) return retryOrStop(answer, () => apply(pass));
    outcome("refused", "No coupon", json.message || "The application was refused.", json.reason);
  }

  function askForUser() {
    const form = el("join");
    form.hidden = false;
    say("Enter your user id to join the queue.");
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      user = el("user").value.trim();
      if (!user) return;
      form.hidden = true;
      join();
    });
  }

  function start() {
    const identity = room.dataset.identity;
    if (identity === "jwt") {
      token = takeToken();
      if (!token) {
        return outcome("refused", "Please sign in", "Open this page from the shop's site once signed in.", "missing_token");
      }
      return join();
    }
    if (identity === "none") {
      user = new URLSearchParams(location.search).get("user");
      if (!user) return askForUser();
    }
    join();
  }

  start();
})();
