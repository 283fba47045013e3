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

  function checkReferences(form) {
    var model = selectedModel(form);
    var input = form.querySelector("[data-reference-input]");
    var counter = form.querySelector("[data-reference-count]");
    var warning = form.querySelector("[data-reference-warning]");
    if (!model || !input) return;
    var chosen = input.files ? input.files.length : 0;
    var stored = form.querySelectorAll("input[name=stored_reference]").length;
    if (counter) counter.value = String(chosen);
    if (warning) {
      var total = chosen + stored;
      var over = total > model.max_reference_images;
      warning.hidden = !over;
      warning.textContent = over
        ? model.label + " takes at most " + model.max_reference_images +
          " reference image(s); you chose " + total + ". Remove " + (total - model.max_reference_images) + "."
        : "";
    }
  }

  // BFL prices each reference image by its megapixels: read the chosen files' sizes, then ask
  // for the estimate again with them (the first answer counts each file as one megapixel).
  var sizeReads = 0;

  function imageSize(file) {
    if (!window.createImageBitmap) return Promise.resolve("?");
    return createImageBitmap(file).then(function (bitmap) {
      var size = bitmap.width + "x" + bitmap.height;
      bitmap.close();
      return size;
    }, function () { return "?"; });
  }

  function readReferenceSizes(form) {
    var input = form.querySelector("[data-reference-input]");
    var field = form.querySelector("[data-reference-sizes]");
    if (!input || !field) return;
    var files = input.files ? Array.prototype.slice.call(input.files) : [];
    var read = ++sizeReads;
    field.value = "";
    if (!files.length) return;
    Promise.all(files.map(imageSize)).then(function (sizes) {
      if (read !== sizeReads) return;  // the person chose other files meanwhile
      field.value = sizes.join(",");
      field.dispatchEvent(new Event("change", { bubbles: true }));
    });
  }

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
      var option = target.selectedOptions[0];
      if (option && option.hasAttribute("data-width")) {
        form.querySelector("#width").value = option.getAttribute("data-width");
        form.querySelector("#height").value = option.getAttribute("data-height");
      }
    }
    if (target.matches("[data-dimension]")) syncPreset(form);
    if (target.matches("[data-reference-input]")) {
      checkReferences(form);
      readReferenceSizes(form);
    }
  }, true);

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (target.matches && target.matches("[data-remove-reference]")) {
      var form = target.closest("form");
      var item = target.closest("li");
      if (item) item.remove();
      if (form) {
        checkReferences(form);
        form.dispatchEvent(new Event("change", { bubbles: true }));
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
