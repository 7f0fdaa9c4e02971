// Dataset upload with a real progress bar: XMLHttpRequest's upload events report bytes sent,
// which fetch() cannot. The API validates every line before answering; on success the
// dataset's page shows the report.
(function () {
  "use strict";

  const form = document.getElementById("upload-form");
  if (!form) return;
  const input = document.getElementById("file");
  const zone = document.getElementById("dropzone");
  const nameInput = document.getElementById("upload-name");
  const fileError = document.getElementById("file-error");
  const box = document.getElementById("upload-progress");
  const bar = document.getElementById("upload-bar");
  const percent = document.getElementById("upload-percent");
  const statusText = document.getElementById("upload-status");
  const errorBox = document.getElementById("upload-error");
  const submit = document.getElementById("upload-submit");
  const meta = document.querySelector('meta[name="csrf-token"]');
  const limit = Number(form.dataset.limit || 0);

  function setProgress(value) {
    const rounded = Math.round(value);
    bar.value = rounded;
    bar.textContent = rounded + "%";
    percent.textContent = rounded + "%";
  }

  function fail(message) {
    errorBox.textContent = message;
    errorBox.hidden = false;
    box.hidden = true;
    submit.disabled = false;
  }

  function chosen(file) {
    fileError.textContent = "";
    input.removeAttribute("aria-invalid");
    if (!nameInput.value.trim()) nameInput.value = file.name.replace(/\.[^.]+$/, "");
    statusText.textContent = "";
  }

  input.addEventListener("change", () => {
    if (input.files.length) chosen(input.files[0]);
  });

  ["dragenter", "dragover"].forEach((type) =>
    zone.addEventListener(type, (event) => {
      event.preventDefault();
      zone.classList.add("dragging");
    })
  );
  ["dragleave", "drop"].forEach((type) =>
    zone.addEventListener(type, () => zone.classList.remove("dragging"))
  );
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    if (!event.dataTransfer.files.length) return;
    input.files = event.dataTransfer.files;
    chosen(input.files[0]);
  });

  function readableError(xhr) {
    try {
      const body = JSON.parse(xhr.responseText);
      if (body && body.detail) return body.detail;
    } catch (ignored) {
      // Not JSON: a proxy's error page, say. Fall through to the status line.
    }
    return "The upload failed (HTTP " + xhr.status + "). Please try again.";
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    errorBox.hidden = true;
    const file = input.files[0];
    if (!file) {
      fileError.textContent = "Choose a .jsonl or .csv file, or drop one here.";
      input.setAttribute("aria-invalid", "true");
      input.focus();
      return;
    }
    if (limit && file.size > limit) {
      fileError.textContent =
        "This file is " + (file.size / 1048576).toFixed(1) + " MB; the limit is " +
        (limit / 1048576).toFixed(0) + " MB.";
      input.setAttribute("aria-invalid", "true");
      return;
    }
    if (!nameInput.value.trim()) {
      nameInput.value = file.name.replace(/\.[^.]+$/, "");
    }

    const xhr = new XMLHttpRequest();
    xhr.open("POST", form.dataset.uploadUrl);
    xhr.setRequestHeader(meta.dataset.header, meta.content);
    xhr.upload.addEventListener("progress", (progress) => {
      if (progress.lengthComputable) setProgress((progress.loaded / progress.total) * 100);
    });
    xhr.upload.addEventListener("load", () => {
      setProgress(100);
      statusText.textContent = "Uploaded. Checking every line…";
    });
    xhr.addEventListener("load", () => {
      if (xhr.status === 201) {
        const dataset = JSON.parse(xhr.responseText);
        statusText.textContent = "Done. Opening the validation report…";
        window.location.assign("/dashboard/fine-tuning/datasets/" + dataset.id);
        return;
      }
      if (xhr.status === 401) {
        window.location.assign("/dashboard/sign-in?next=/dashboard/fine-tuning/datasets/new");
        return;
      }
      fail(readableError(xhr));
    });
    xhr.addEventListener("error", () =>
      fail("The server could not be reached. Check your connection and try again.")
    );

    setProgress(0);
    statusText.textContent = "Uploading " + file.name + "…";
    box.hidden = false;
    submit.disabled = true;
    xhr.send(new FormData(form));
  });
})();
