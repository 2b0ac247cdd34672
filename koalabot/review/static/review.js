// koalabot review: keyboard shortcuts and in-place actions. Without this script every action
// is a plain form post that comes back to the same page.
"use strict";

(function () {
  const answers = document.getElementById("answers");
  const help = document.getElementById("help");
  const toast = document.getElementById("toast");
  if (!answers) return;

  let current = -1;
  let choosingReason = false;

  const cards = () => Array.from(answers.querySelectorAll("article.card"));

  function select(index, scroll = true) {
    const all = cards();
    if (!all.length) return;
    current = Math.max(0, Math.min(index, all.length - 1));
    all.forEach((card, i) => card.classList.toggle("current", i === current));
    const card = all[current];
    card.focus({ preventScroll: true });
    if (scroll) card.scrollIntoView({ block: "nearest" });
    history.replaceState(null, "", "#" + card.id);
  }

  function currentCard() {
    return cards()[current] || null;
  }

  function say(message) {
    toast.textContent = message;
    toast.classList.add("show");
    clearTimeout(say.timer);
    say.timer = setTimeout(() => toast.classList.remove("show"), 3500);
  }

  function go(direction) {
    const link = document.querySelector(`a[data-nav="${direction}"]`);
    if (link) {
      const target = new URL(link.href);
      target.hash = direction === "older" ? "first" : "last";
      location.href = target.toString();
    }
  }

  function next() {
    if (current < cards().length - 1) select(current + 1);
    else go("older");
  }

  function previous() {
    if (current > 0) select(current - 1);
    else go("newer");
  }

  async function send(form, submitter) {
    const card = form.closest("article.card");
    const body = new FormData(form, submitter);
    card.classList.add("busy");
    try {
      const response = await fetch(form.action, {
        method: "POST",
        body: new URLSearchParams(body),
        headers: { "X-Requested-With": "koalabot-review" },
        credentials: "same-origin",
      });
      const text = await response.text();
      if (!response.ok) {
        say(text || `failed: HTTP ${response.status}`);
        return;
      }
      const fresh = document.createRange().createContextualFragment(text).firstElementChild;
      const index = cards().indexOf(card);
      card.replaceWith(fresh);
      const undone = form.classList.contains("undo");
      select(index);
      if (!undone) next();
    } catch (error) {
      say(`failed: ${error}`);
    } finally {
      card.classList.remove("busy");
    }
  }

  answers.addEventListener("submit", (event) => {
    const form = event.target.closest("form.act");
    if (!form) return;
    event.preventDefault();
    choosingReason = false;
    send(form, event.submitter);
  });

  answers.addEventListener("click", (event) => {
    const card = event.target.closest("article.card");
    if (card) {
      const index = cards().indexOf(card);
      if (index !== current) select(index);
    }
  });

  function startCorrection(card) {
    const details = card.querySelector("form.correct details");
    details.open = true;
    const area = details.querySelector("textarea");
    area.focus();
    area.setSelectionRange(area.value.length, area.value.length);
  }

  function chooseReason(card, on) {
    choosingReason = on;
    card.querySelector("form.exclude").classList.toggle("choosing", on);
    if (on) say("Exclude: press 1–5 for the reason, Esc to cancel");
  }

  document.addEventListener("keydown", (event) => {
    const target = event.target;
    const typing = target.matches("textarea, input, select");
    const card = currentCard();
    if (typing) {
      const form = target.closest("form.correct");
      if (form && event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit(form.querySelector("button.save"));
      } else if (form && event.key === "Escape") {
        form.querySelector("details").open = false;
        target.closest("article.card").focus();
      }
      return;
    }
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    if (choosingReason && card) {
      const buttons = card.querySelectorAll("form.exclude button.reason");
      const n = Number.parseInt(event.key, 10);
      if (n >= 1 && n <= buttons.length) {
        event.preventDefault();
        buttons[n - 1].form.requestSubmit(buttons[n - 1]);
      } else if (event.key === "Escape") {
        chooseReason(card, false);
      }
      return;
    }
    const act = (selector) => {
      const button = card && card.querySelector(selector);
      if (button) button.form.requestSubmit(button);
    };
    switch (event.key) {
      case "j":
      case "ArrowDown":
        event.preventDefault();
        next();
        break;
      case "k":
      case "ArrowUp":
        event.preventDefault();
        previous();
        break;
      case "i":
        act("button.include");
        break;
      case "x":
        if (card) chooseReason(card, true);
        break;
      case "c":
        if (card) {
          event.preventDefault();
          startCorrection(card);
        }
        break;
      case "u":
        act("form.undo button");
        break;
      case "?":
        if (help.open) help.close();
        else help.showModal();
        break;
      default:
        return;
    }
  });

  document.querySelectorAll("[data-help]").forEach((button) => {
    button.addEventListener("click", () => help.showModal());
  });

  // Start on the answer named in the address, else the first (or the last when paging back).
  const all = cards();
  const named = location.hash.slice(1);
  const index = named === "last" ? all.length - 1 : all.findIndex((card) => card.id === named);
  select(index >= 0 ? index : 0, index >= 0);
})();
