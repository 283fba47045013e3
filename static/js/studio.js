// The studio's own page behaviour: the generate form (driven by the catalogue JSON the page
// embeds), keyboard shortcuts, copy buttons and local times. Everything else is htmx.
(function () {
  "use strict";

  var catalogue = null;

  function loadCatalogue() {
    if (catalogue) return catalogue;
    var node = document.getElementById("catalogue-data");
    if (!node) return null;
    try {
      catalogue = JSON.parse(node.textContent);
    } catch (err) {
      catalogue = null;
    }
    return catalogue;
  }

  function modelSpec(name) {
    var data = loadCatalogue();
    if (!data) return null;
    for (var i = 0; i < data.models.length; i++) {
      if (data.models[i].name === name) return data.models[i];
    }
    return null;
  }

  function fieldSpec(model, name) {
    for (var i = 0; i < model.fields.length; i++) {
      if (model.fields[i].name === name && !model.fields[i].internal) return model.fields[i];
    }
    return null;
  }

  function selectedModel(form) {
    var checked = form.querySelector("input[name=model]:checked");
    return checked ? modelSpec(checked.value) : null;
  }

  function setLimit(input, attr, value) {
    if (value === null || value === undefined) input.removeAttribute(attr);
    else input.setAttribute(attr, String(value));
  }

  // Show the fields the chosen model takes, with its limits and help, and hide the rest.
  function applyModel(form, switching) {
    var model = selectedModel(form);
    if (!model) return;
    form.querySelectorAll("[data-field]").forEach(function (wrapper) {
      var name = wrapper.getAttribute("data-field");
      if (name === "reference_images") {
        wrapper.hidden = model.max_reference_images === 0;
        var limit = wrapper.querySelector("[data-reference-limit]");
        if (limit) limit.textContent = String(model.max_reference_images);
        return;
      }
      var spec = fieldSpec(model, name);
      wrapper.hidden = !spec;
      if (!spec) return;
      var input = wrapper.querySelector("input[type=number]");
      if (input) {
        setLimit(input, "min", spec.minimum);
        // The team's cap on image sides (data-side-cap) lowers the model's own maximum.
        var cap = input.getAttribute("data-side-cap");
        var maximum = cap ? (spec.maximum !== null ? Math.min(spec.maximum, Number(cap)) : Number(cap)) : spec.maximum;
        setLimit(input, "max", maximum);
        if (spec.multiple_of) input.setAttribute("step", String(spec.multiple_of));
        else if (spec.type === "number") input.setAttribute("step", "any");
        else input.removeAttribute("step");
        var value = input.value === "" ? null : Number(input.value);
        var outside = value !== null &&
          ((maximum !== null && value > maximum) || (spec.minimum !== null && value < spec.minimum));
        if (switching && (input.value === "" || outside) && spec.default !== null && spec.default !== undefined) {
          input.value = String(spec.default);
        }
      }
      var box = wrapper.querySelector("input[type=checkbox][data-boolean]");
      // A box the person has not touched shows this model's own default (BFL's).
      if (box && switching && !box.hasAttribute("data-touched") && typeof spec.default === "boolean") {
        box.checked = spec.default;
      }
      var help = wrapper.querySelector("[data-help]");
      if (help) help.textContent = spec.help || "";
    });
    var pixels = form.querySelector("[data-sizing=pixels]");
    if (pixels) pixels.hidden = model.sizing !== "pixels";
    checkReferences(form);
  }

  // Reference images: an ordered list of stored images (hidden `stored_reference` inputs).
  // Files chosen, dropped or pasted are uploaded at once (POST /references: checked and
  // stored by the same function as every other way in) and join the list; the model's limit
  // comes from the catalogue the page embeds.
  function referenceItems(form) {
    return Array.prototype.slice.call(form.querySelectorAll("[data-reference-item]"));
  }

  function checkReferences(form) {
    var model = selectedModel(form);
    var warning = form.querySelector("[data-reference-warning]");
    var used = form.querySelector("[data-reference-used]");
    var input = form.querySelector("[data-reference-input]");
    if (!model) return;
    var items = referenceItems(form);
    items.forEach(function (item, index) {
      var n = index + 1;
      var label = item.querySelector(".reference-label");
      if (label) label.textContent = n + " · " + item.getAttribute("data-width") + "×" + item.getAttribute("data-height");
      var img = item.querySelector("img");
      if (img) img.alt = "Reference image " + n;
      item.querySelectorAll("button").forEach(function (button) {
        var what = button.hasAttribute("data-remove-reference") ? "Remove" :
          (button.getAttribute("data-move-reference") === "-1" ? "Move earlier:" : "Move later:");
        button.setAttribute("aria-label", what + " reference " + n);
      });
    });
    if (used) used.textContent = String(items.length);
    var limit = model.max_reference_images;
    var over = items.length > limit;
    if (input) input.disabled = items.length >= limit;
    if (warning) {
      warning.hidden = !over;
      warning.textContent = over
        ? model.label + " takes at most " + limit + " reference image(s); you chose " +
          items.length + ". Remove " + (items.length - limit) + "."
        : "";
    }
  }

  function referenceNotice(form, text) {
    var warning = form.querySelector("[data-reference-warning]");
    if (!warning) return;
    warning.hidden = !text;
    warning.textContent = text || "";
  }

  function followReferenceSize(form, hadReferences) {
    // An edit follows its first reference's size (BFL's default) until the person sets one.
    var preset = form.querySelector("[data-aspect-preset]");
    var width = form.querySelector("#width");
    var height = form.querySelector("#height");
    if (!preset || !width || !height) return;
    var count = referenceItems(form).length;
    if (count && !hadReferences && !preset.hasAttribute("data-touched")) {
      preset.value = "input";
      width.value = "";
      height.value = "";
    } else if (!count && preset.value === "input") {
      var first = preset.querySelector("option[data-width]:not([value=input])");
      if (first) {
        preset.value = first.value;
        width.value = first.getAttribute("data-width");
        height.value = first.getAttribute("data-height");
      }
    }
  }

  function referencesChanged(form, hadReferences) {
    followReferenceSize(form, hadReferences);
    checkReferences(form);
    form.dispatchEvent(new Event("change", { bubbles: true }));
  }

  function addReferenceItem(form, ref) {
    var list = form.querySelector("[data-reference-list]");
    var item = document.createElement("li");
    item.className = "reference-item";
    item.draggable = true;
    item.setAttribute("data-reference-item", "");
    item.setAttribute("data-width", String(ref.width));
    item.setAttribute("data-height", String(ref.height));
    var hidden = document.createElement("input");
    hidden.type = "hidden";
    hidden.name = "stored_reference";
    hidden.value = ref.key;
    var img = document.createElement("img");
    img.src = ref.thumbnail_url;
    img.width = 96;
    img.height = 96;
    var label = document.createElement("span");
    label.className = "reference-label";
    var buttons = document.createElement("span");
    buttons.className = "reference-buttons";
    [["data-move-reference", "-1", "↑"], ["data-move-reference", "1", "↓"], ["data-remove-reference", "", "Remove"]].forEach(function (spec) {
      var button = document.createElement("button");
      button.type = "button";
      button.className = "btn btn-small";
      button.setAttribute(spec[0], spec[1]);
      button.textContent = spec[2];
      buttons.appendChild(button);
    });
    item.appendChild(hidden);
    item.appendChild(img);
    item.appendChild(label);
    item.appendChild(buttons);
    list.appendChild(item);
  }

  function uploadReferences(form, files) {
    var model = selectedModel(form);
    if (!model || !files.length) return Promise.resolve();
    var room = model.max_reference_images - referenceItems(form).length;
    var images = Array.prototype.filter.call(files, function (f) { return /^image\//.test(f.type || "image/"); });
    if (images.length > room) {
      referenceNotice(form, model.label + " takes at most " + model.max_reference_images +
        " reference image(s); " + (room > 0 ? "only the first " + room + " were added." : "remove one first."));
      images = images.slice(0, Math.max(0, room));
    }
    var csrf = form.querySelector("input[name=csrf_token]");
    var had = referenceItems(form).length > 0;
    return images.reduce(function (chain, file) {
      return chain.then(function () {
        var body = new FormData();
        body.append("file", file, file.name || "pasted.png");
        body.append("model", model.name);
        if (csrf) body.append("csrf_token", csrf.value);
        return fetch("/references", { method: "POST", body: body, credentials: "same-origin" })
          .then(function (response) {
            return response.text().then(function (text) {
              if (!response.ok) {
                // A refusal in JSON (our checks) or as an error page (a request-size limit).
                throw new Error(refusalText({ responseText: text, status: response.status }));
              }
              addReferenceItem(form, JSON.parse(text));
            });
          });
      });
    }, Promise.resolve()).then(function () {
      referencesChanged(form, had);
    }, function (err) {
      referencesChanged(form, had);
      referenceNotice(form, String(err.message || err));
    });
  }

  function moveReference(item, step) {
    var list = item.parentNode;
    if (step < 0 && item.previousElementSibling) list.insertBefore(item, item.previousElementSibling);
    if (step > 0 && item.nextElementSibling) list.insertBefore(item.nextElementSibling, item);
  }

  var dragged = null;

  document.addEventListener("dragstart", function (event) {
    var item = event.target.closest && event.target.closest("[data-reference-item]");
    if (!item) return;
    dragged = item;
    item.classList.add("is-dragging");
    if (event.dataTransfer) {
      event.dataTransfer.effectAllowed = "move";
      event.dataTransfer.setData("text/plain", "reference");
    }
  });

  document.addEventListener("dragend", function () {
    if (dragged) dragged.classList.remove("is-dragging");
    dragged = null;
  });

  document.addEventListener("dragover", function (event) {
    var zone = event.target.closest && event.target.closest("[data-reference-drop]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.add("is-dragover");
    var over = event.target.closest("[data-reference-item]");
    if (dragged && over && over !== dragged) {
      var box = over.getBoundingClientRect();
      var after = event.clientX > box.left + box.width / 2;
      over.parentNode.insertBefore(dragged, after ? over.nextSibling : over);
    }
  });

  document.addEventListener("dragleave", function (event) {
    var zone = event.target.closest && event.target.closest("[data-reference-drop]");
    if (zone && !zone.contains(event.relatedTarget)) zone.classList.remove("is-dragover");
  });

  document.addEventListener("drop", function (event) {
    var zone = event.target.closest && event.target.closest("[data-reference-drop]");
    if (!zone) return;
    event.preventDefault();
    zone.classList.remove("is-dragover");
    var form = zone.closest("form");
    if (dragged) {
      dragged.classList.remove("is-dragging");
      dragged = null;
      referencesChanged(form, true);
      return;
    }
    var files = event.dataTransfer ? event.dataTransfer.files : [];
    if (files && files.length) uploadReferences(form, files);
  });

  document.addEventListener("paste", function (event) {
    var form = document.getElementById("generate-form");
    if (!form || !event.clipboardData) return;
    var files = Array.prototype.filter.call(event.clipboardData.files || [], function (f) {
      return /^image\//.test(f.type);
    });
    if (!files.length) return;
    event.preventDefault();
    uploadReferences(form, files);
  });

  function syncPreset(form) {
    var preset = form.querySelector("[data-aspect-preset]");
    var width = form.querySelector("#width");
    var height = form.querySelector("#height");
    if (!preset || !width || !height) return;
    var match = "custom";
    preset.querySelectorAll("option[data-width]").forEach(function (option) {
      if (option.getAttribute("data-width") === width.value && option.getAttribute("data-height") === height.value) {
        match = option.value;
      }
    });
    preset.value = match;
  }

  // Listened to in the capture phase: these handlers change other fields (the size a preset
  // stands for, the reference count, a model's defaults), and they must have done so before
  // htmx, listening on the form itself, reads the form to ask for the new estimate.
  document.addEventListener("change", function (event) {
    var target = event.target;
    var form = target.closest && target.closest("#generate-form");
    if (!form) return;
    if (target.matches("[data-boolean]")) target.setAttribute("data-touched", "");
    if (target.matches("[data-model-radio]")) applyModel(form, true);
    if (target.matches("[data-seed-mode]")) {
      var seed = form.querySelector("#seed");
      seed.disabled = target.value !== "fixed";
      if (!seed.disabled) seed.focus();
    }
    if (target.matches("[data-aspect-preset]")) {
      target.setAttribute("data-touched", "");
      var option = target.selectedOptions[0];
      if (option && option.hasAttribute("data-width")) {
        form.querySelector("#width").value = option.getAttribute("data-width");
        form.querySelector("#height").value = option.getAttribute("data-height");
      }
    }
    if (target.matches("[data-dimension]")) syncPreset(form);
    if (target.matches("[data-reference-input]")) {
      var chosen = Array.prototype.slice.call(target.files || []);
      target.value = "";
      event.stopPropagation();
      uploadReferences(form, chosen);
    }
  }, true);

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.matches && target.matches("[data-remove-reference]")) {
      var form = target.closest("form");
      var item = target.closest("li");
      if (item) item.remove();
      if (form) referencesChanged(form, true);
    }
    if (target.matches && target.matches("[data-move-reference]")) {
      var moved = target.closest("[data-reference-item]");
      var owner = target.closest("form");
      if (moved && owner) {
        moveReference(moved, Number(target.getAttribute("data-move-reference")));
        // Keep the keyboard on the button that moved, wherever the item went.
        target.focus();
        referencesChanged(owner, true);
      }
    }
    var copy = target.closest && target.closest("[data-copy]");
    if (copy) {
      var source = document.getElementById(copy.getAttribute("data-copy"));
      if (!source) return;
      var text = source.textContent;
      var done = function () {
        var label = copy.textContent;
        copy.textContent = "Copied";
        setTimeout(function () { copy.textContent = label; }, 1500);
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(text).then(done, function () {});
      } else {
        var area = document.createElement("textarea");
        area.value = text;
        document.body.appendChild(area);
        area.select();
        try { document.execCommand("copy"); done(); } catch (err) { /* nothing to do */ }
        area.remove();
      }
    }
  });

  // Ctrl+Enter (Cmd+Enter on a Mac) submits the generate form from anywhere inside it.
  document.addEventListener("keydown", function (event) {
    if (event.key !== "Enter" || !(event.ctrlKey || event.metaKey)) return;
    var form = event.target.closest && event.target.closest("#generate-form");
    if (!form) return;
    event.preventDefault();
    if (form.requestSubmit) form.requestSubmit();
    else form.submit();
  });

  function localTimes(root) {
    root.querySelectorAll("time[data-local]").forEach(function (node) {
      var when = new Date(node.getAttribute("datetime"));
      if (!isNaN(when)) node.textContent = when.toLocaleString();
    });
  }

  // Sizes that depend on the data come as data-* attributes and are set here: the
  // Content-Security-Policy allows no inline style attributes.
  function dataStyles(root) {
    var all = function (selector) {
      var found = root.querySelectorAll ? Array.prototype.slice.call(root.querySelectorAll(selector)) : [];
      if (root.matches && root.matches(selector)) found.push(root);
      return found;
    };
    all("[data-aspect]").forEach(function (node) {
      node.style.aspectRatio = node.getAttribute("data-aspect");
    });
    all("[data-percent]").forEach(function (node) {
      var value = parseFloat(node.getAttribute("data-percent"));
      if (!isNaN(value)) node.style.width = Math.max(0, Math.min(100, value)) + "%";
    });
  }

  // A read-only field holding a link or token selects its whole text when focused.
  document.addEventListener("focusin", function (event) {
    var target = event.target;
    if (target && target.hasAttribute && target.hasAttribute("data-select-on-focus")) target.select();
  });

  function shown(element) {
    return !!(element.offsetWidth || element.offsetHeight || element.getClientRects().length);
  }

  // After a refused submit: keyboard focus goes to the first field at fault (else the summary
  // of problems), and the problem is read out by the live region outside the form.
  function focusFirstProblem(form) {
    var summary = form.querySelector("#form-problems");
    if (!summary) return;
    var fields = form.querySelectorAll('[aria-invalid="true"]');
    var first = null;
    for (var i = 0; i < fields.length; i++) {
      if (fields[i].type !== "hidden" && !fields[i].disabled && shown(fields[i])) {
        first = fields[i];
        break;
      }
    }
    var message = summary.textContent.trim();
    if (first) {
      var note = document.getElementById(first.getAttribute("aria-describedby") || "");
      var label = form.querySelector('label[for="' + first.id + '"]');
      if (note) {
        message = (label ? label.textContent.trim() + ": " : "") + note.textContent.trim() +
          " " + message;
      }
      first.focus();
    } else {
      summary.focus();
    }
    var announcer = document.getElementById("form-announcer");
    if (announcer) {
      announcer.textContent = "";
      window.setTimeout(function () { announcer.textContent = message; }, 50);
    }
  }

  function init(root) {
    localTimes(root);
    dataStyles(root);
    var form = root.querySelector ? root.querySelector("#generate-form") : null;
    if (!form && root.id === "generate-form") form = root;
    if (form) {
      applyModel(form, false);
      focusFirstProblem(form);
    }
  }

  // htmx swaps in only 2xx answers; a refusal (403 not allowed, 413 too large, 422 over a
  // limit) would otherwise change nothing on the page. Show its message at the top instead.
  function refusalText(xhr) {
    try {
      var page = new DOMParser().parseFromString(xhr.responseText, "text/html");
      var found = page.querySelector(".error-page p");
      if (found && found.textContent) return found.textContent;
    } catch (ignored) { /* not HTML */ }
    try {
      return JSON.parse(xhr.responseText).error.message;
    } catch (ignored) { /* not JSON either */ }
    return "The studio refused this request (" + xhr.status + ").";
  }

  document.addEventListener("htmx:responseError", function (event) {
    var notice = document.getElementById("request-refused");
    if (!notice) {
      notice = document.createElement("p");
      notice.id = "request-refused";
      notice.className = "notice notice-error";
      notice.setAttribute("role", "alert");
      var main = document.querySelector("main") || document.body;
      main.insertBefore(notice, main.firstChild);
    }
    notice.textContent = refusalText(event.detail.xhr);
  });

  document.addEventListener("DOMContentLoaded", function () { init(document); });
  document.addEventListener("htmx:load", function (event) { init(event.target); });
})();
