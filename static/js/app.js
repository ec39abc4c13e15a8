/* Klingweb, every page: "Back" links (data-back) go back in the history when there is one, and
   a server error answered to an htmx request shows on the page.
   Validation answers (400, 422: the form again with its errors) are swapped like any page
   part (htmx-config "responseHandling" in base.html); any other error (403, 404, 413, 429,
   5xx) or a network failure is written into #htmx-error, and cleared by the next request
   that succeeds. No dependencies besides htmx. */
(function () {
  "use strict";

  var TEXTS = {
    401: "You are signed out. Sign in again and retry.",
    403: "Your role in this team does not allow this (403).",
    404: "Not found (404): it may have been removed, or you are no longer in this team.",
    405: "This action is not available here (405).",
    413: "What you sent is too large (413).",
    429: "Too many attempts; wait a moment and try again (429)."
  };

  function region() { return document.getElementById("htmx-error"); }

  function show(text) {
    var box = region();
    if (!box) return;
    box.textContent = text;
    box.hidden = false;
  }

  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    var status = xhr ? xhr.status : 0;
    var text = TEXTS[status];
    if (!text) {
      text = status >= 500
        ? "The portal had a problem (" + status + "); nothing was changed by this request as far as it could tell. Try again."
        : "The request was refused (" + status + ").";
    }
    show(text);
  });

  document.addEventListener("htmx:sendError", function () {
    show("The portal could not be reached. Check the connection and try again.");
  });

  document.addEventListener("htmx:afterRequest", function (event) {
    var box = region();
    if (box && !box.hidden && event.detail.successful) box.hidden = true;
  });

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("a[data-back]");
    if (!link || window.history.length < 2) return;
    event.preventDefault();
    window.history.back();
  });
})();
