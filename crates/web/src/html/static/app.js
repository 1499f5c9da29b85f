// Millions: progressive enhancement of the pages' forms. Every page works
// without this script (plain forms and redirects); with it, the like buttons and
// comment forms marked `data-inline` answer in place, without a page load. The
// form is sent as it is, to the same address, asking for JSON; on any failure
// the form is submitted the plain way, so the server's error page shows.
"use strict";

function plural(n, one, many) {
  return n === 1 ? "1 " + one : n + " " + many;
}

async function sendInline(form) {
  // The attribute, not `form.action`: the like form has an input named
  // `action`, which that property would return instead.
  const response = await fetch(form.getAttribute("action"), {
    method: "POST",
    body: new URLSearchParams(new FormData(form)),
    headers: { Accept: "application/json" },
    credentials: "same-origin",
  });
  if (!response.ok) {
    throw new Error("status " + response.status);
  }
  return response.json();
}

function likeDone(form, answer) {
  const card = form.closest("[data-post]");
  const action = form.querySelector("input[name=action]");
  const button = form.querySelector("button");
  action.value = answer.liked ? "unlike" : "like";
  button.textContent = answer.liked ? "♥ Unlike" : "♡ Like";
  button.setAttribute("aria-pressed", answer.liked ? "true" : "false");
  button.classList.toggle("secondary", answer.liked);
  const likes = card && card.querySelector(".likes");
  if (likes) likes.textContent = plural(answer.like_count, "like", "likes");
}

function commentDone(form, answer) {
  const card = form.closest("[data-post]");
  const input = form.querySelector("input[name=body]");
  input.value = "";
  const list = card && card.querySelector(".comment-list");
  if (list) {
    const item = document.createElement("li");
    item.className = "comment";
    const who = document.createElement("strong");
    who.textContent = answer.author.display_name;
    const body = document.createElement("span");
    body.className = "body";
    body.textContent = " " + answer.body;
    item.append(who, body);
    list.prepend(item);
  }
  const count = card && card.querySelector(".comment-count");
  if (count && typeof answer.comment_count === "number") {
    count.textContent = plural(answer.comment_count, "comment", "comments");
  }
}

document.addEventListener("submit", async (event) => {
  const form = event.target;
  const kind = form.dataset && form.dataset.inline;
  if (!kind || form.dataset.sending) return;
  event.preventDefault();
  form.dataset.sending = "1";
  try {
    const answer = await sendInline(form);
    if (kind === "like") likeDone(form, answer);
    if (kind === "comment") commentDone(form, answer);
  } catch (e) {
    form.submit();
  } finally {
    delete form.dataset.sending;
  }
});
