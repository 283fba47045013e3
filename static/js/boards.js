// Recipe import (drop an image on the detail page) and selecting many gallery tiles at once.
(function () {
  "use strict";

  function submit(form) {
    if (window.htmx) window.htmx.trigger(form, "submit");
    else form.submit();
  }

  function initRecipeDrop(form) {
    var input = form.querySelector("input[type=file]");
    input.addEventListener("change", function () { if (input.files.length) submit(form); });
    form.addEventListener("dragover", function (event) {
      event.preventDefault();
      form.classList.add("is-dragging");
    });
    form.addEventListener("dragleave", function () { form.classList.remove("is-dragging"); });
    form.addEventListener("drop", function (event) {
      event.preventDefault();
      form.classList.remove("is-dragging");
      if (!event.dataTransfer || !event.dataTransfer.files.length) return;
      input.files = event.dataTransfer.files;
      submit(form);
    });
  }

  window.studioBoards = window.studioBoards || {};
  window.studioBoards.initRecipeDrop = initRecipeDrop;

  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("[data-recipe-drop]");
    for (var i = 0; i < forms.length; i++) initRecipeDrop(forms[i]);
  });
})();
