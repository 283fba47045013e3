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

  // --- selecting tiles -----------------------------------------------------------------
  function initSelection(form) {
    var grid = document.querySelector("[data-selectable]");
    if (!grid) return;
    var ids = form.querySelector("[data-bulk-ids]");
    var count = form.querySelector("[data-bulk-count]");
    var all = form.querySelector("[data-bulk-all]");
    var last = null;

    function boxes() { return Array.prototype.slice.call(grid.querySelectorAll("[data-select]")); }

    function refresh() {
      var picked = boxes().filter(function (b) { return b.checked; });
      ids.value = picked.map(function (b) { return b.value; }).join(",");
      boxes().forEach(function (b) {
        var tile = b.closest("figure");
        if (tile) tile.classList.toggle("is-selected", b.checked);
      });
      if (all.checked) count.textContent = "All matching images selected";
      else if (picked.length === 0) count.textContent = "None selected";
      else count.textContent = picked.length + " selected";
      form.classList.toggle("has-selection", all.checked || picked.length > 0);
    }

    grid.addEventListener("click", function (event) {
      var box = event.target.closest ? event.target.closest("[data-select]") : null;
      if (!box) return;
      if (all.checked && !box.checked) all.checked = false;
      var list = boxes();
      if (event.shiftKey && last && last !== box) {
        var a = list.indexOf(last), b = list.indexOf(box);
        if (a !== -1 && b !== -1) {
          var lo = Math.min(a, b), hi = Math.max(a, b);
          for (var i = lo; i <= hi; i++) list[i].checked = box.checked;
        }
      }
      last = box;
      refresh();
    });
    all.addEventListener("change", function () {
      boxes().forEach(function (b) { b.checked = all.checked; });
      refresh();
    });
    form.querySelector("[data-bulk-clear]").addEventListener("click", function () {
      all.checked = false;
      boxes().forEach(function (b) { b.checked = false; });
      last = null;
      refresh();
    });
    // Tiles loaded by the endless scroll join an "all matching" selection.
    document.body.addEventListener("htmx:afterSwap", function () {
      if (all.checked) boxes().forEach(function (b) { b.checked = true; });
      refresh();
    });
    // A deleted or removed tile leaves the selection with its tile.
    document.body.addEventListener("htmx:oobAfterSwap", refresh);
    refresh();
  }

  window.studioBoards = window.studioBoards || {};
  window.studioBoards.initRecipeDrop = initRecipeDrop;
  window.studioBoards.initSelection = initSelection;

  document.addEventListener("DOMContentLoaded", function () {
    var forms = document.querySelectorAll("[data-recipe-drop]");
    for (var i = 0; i < forms.length; i++) initRecipeDrop(forms[i]);
    var bulk = document.querySelector("[data-bulk]");
    if (bulk) initSelection(bulk);
  });
})();
