// Keyboard (and drag) ranking for the annotator page. The form's rank boxes stay the source of
// truth, so the page also works without this script; this file only fills them in faster.
(function () {
  "use strict";

  let state = null; // {form, cards, picks: [{position, tie}], tieNext, startedAt}

  function init() {
    const form = document.getElementById("rank-form");
    if (!form || form.dataset.bound) { state = form ? state : null; return; }
    form.dataset.bound = "1";
    state = {
      form: form,
      cards: Array.from(form.querySelectorAll("[data-rollout]")),
      picks: [],
      tieNext: false,
      startedAt: performance.now(),
    };
    form.addEventListener("submit", stampTime);
    form.addEventListener("htmx:configRequest", stampTimeHtmx);
    state.cards.forEach(bindDrag);
    render();
  }

  function stampTime() {
    state.form.elements.time_spent_ms.value = String(Math.round(performance.now() - state.startedAt));
  }

  function stampTimeHtmx(event) {
    if (event.detail.elt !== state.form) return;
    stampTime();
    event.detail.parameters.set
      ? event.detail.parameters.set("time_spent_ms", state.form.elements.time_spent_ms.value)
      : (event.detail.parameters.time_spent_ms = state.form.elements.time_spent_ms.value);
  }

  function rankInput(card) { return card.querySelector('input[name^="rank_"]'); }
  function flagSelect(card) { return card.querySelector('select[name^="flag_"]'); }

  // Picks → ranks: a pick marked `tie` shares the previous pick's rank.
  function render() {
    let rank = 0;
    const summary = [];
    state.cards.forEach((card) => { rankInput(card).value = ""; card.classList.remove("ranked"); });
    state.picks.forEach((pick, index) => {
      if (!(pick.tie && index > 0)) rank += 1;
      const card = state.cards[pick.position - 1];
      rankInput(card).value = String(rank);
      card.classList.add("ranked");
      summary.push((index === 0 ? "" : pick.tie ? " = " : " > ") + pick.position);
    });
    state.cards.forEach((card) => {
      const value = rankInput(card).value;
      card.querySelector("[data-rank-badge], .badge").textContent = value ? "#" + value : "";
    });
    say("");
    const out = state.form.querySelector('[data-testid="order-summary"]');
    const count = state.cards.length;
    out.textContent = summary.length ? summary.join("") + (state.tieNext ? " =" : "") : "press 1–" + count;
  }

  function pick(position) {
    if (position < 1 || position > state.cards.length) return;
    if (state.picks.some((p) => p.position === position)) return;
    state.picks.push({ position: position, tie: state.tieNext && state.picks.length > 0 });
    state.tieNext = false;
    render();
  }

  function undo() {
    if (state.tieNext) { state.tieNext = false; } else { state.picks.pop(); }
    render();
  }

  function cycleFlag(position) {
    const select = flagSelect(state.cards[position - 1]);
    if (!select) return;
    const order = ["", "broken", "harmful"];
    select.value = order[(order.indexOf(select.value) + 1) % order.length];
    state.cards[position - 1].dataset.flag = select.value;
  }

  function submit() {
    const allBad = state.form.elements.all_bad.checked;
    const missing = state.cards.map((card, index) => index + 1)
      .filter((position) => !state.picks.some((p) => p.position === position));
    if (missing.length && !allBad) {
      // Not sent: say what is missing, in the words the server uses for the same refusal (labeling.forms).
      say("Not sent yet: rank every response (no rank yet: " + missing.join(", ") + "), or press a if all are bad.");
      return;
    }
    state.form.requestSubmit();
  }

  // The note under the order summary; an empty text hides it.
  function say(text) {
    const note = state.form.querySelector('[data-testid="incomplete"]');
    if (!note) return;
    note.textContent = text;
    note.hidden = !text;
  }

  function onKey(event) {
    if (!state || !document.body.contains(state.form)) return;
    const target = event.target;
    if (target && (target.tagName === "INPUT" && target.type !== "checkbox" || target.tagName === "SELECT" || target.tagName === "TEXTAREA")) return;
    if (event.ctrlKey || event.metaKey || event.altKey) return;
    // Enter on a focused button or link keeps its own meaning (skip, navigate); on a focused expander it unfolds
    // until the first pick, then submits as anywhere else (focus stays on an expander opened by keyboard).
    if (event.key === "Enter" && target && target.closest && target.closest("button, a")) return;
    if (event.key === "Enter" && target && target.closest && target.closest("summary") && !state.picks.length) return;
    const digit = /^Digit([1-9])$/.exec(event.code) || /^Numpad([1-9])$/.exec(event.code);
    if (digit && event.shiftKey) { cycleFlag(Number(digit[1])); event.preventDefault(); return; }
    if (digit) { pick(Number(digit[1])); event.preventDefault(); return; }
    switch (event.key) {
      case "=": case "t": state.tieNext = state.picks.length > 0; render(); break;
      case "Backspace": case "u": undo(); break;
      case "Enter": submit(); break;
      case "a": state.form.elements.all_bad.checked = !state.form.elements.all_bad.checked; break;
      case "s": { const skip = document.getElementById("skip"); if (skip) skip.click(); break; }
      default: return;
    }
    event.preventDefault();
  }

  // Drag a card onto another to put it just above. The ranking takes the on-screen order of the
  // cards already ranked plus the dragged one; cards never touched stay unranked.
  let dragged = null;
  function bindDrag(card) {
    card.addEventListener("dragstart", () => { dragged = card; card.classList.add("dragging"); });
    card.addEventListener("dragend", () => { card.classList.remove("dragging"); dragged = null; });
    card.addEventListener("dragover", (event) => event.preventDefault());
    card.addEventListener("drop", (event) => {
      event.preventDefault();
      if (!dragged || dragged === card) return;
      card.parentNode.insertBefore(dragged, card);
      const ranked = new Set(state.picks.map((p) => p.position));
      ranked.add(state.cards.indexOf(dragged) + 1);
      const onScreen = Array.from(state.form.querySelectorAll("[data-rollout]"));
      state.picks = onScreen
        .map((c) => state.cards.indexOf(c) + 1)
        .filter((position) => ranked.has(position))
        .map((position) => ({ position: position, tie: false }));
      render();
    });
  }

  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("htmx:afterSettle", init);
  document.addEventListener("keydown", onKey);
})();
