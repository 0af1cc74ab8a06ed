(function () {
    "use strict";
    var ids = ["before", "after", "diff"];
    var svgs = JSON.parse(document.getElementById("flamegraphs").textContent);
    var frames = ids.map(function (id) { return document.getElementById(id); });
    var ready = 0;
    window.addEventListener("message", function (e) {
        var m = e.data;
        if (!m || m.flamegraphSync !== true) return;
        var from = frames.filter(function (f) { return f.contentWindow === e.source; })[0];
        if (!from) return;
        if (m.kind === "ready") {
            if (m.height > 0) from.style.height = Math.ceil(m.height) + "px";
            ready += 1;
            if (ready === frames.length) window.flamegraphsReady = true;
            return;
        }
        frames.forEach(function (f) {
            if (f !== from) f.contentWindow.postMessage(m, "*");
        });
    });
    frames.forEach(function (f, i) {
        f.src = URL.createObjectURL(new Blob([svgs[i]], { type: "image/svg+xml" }));
    });
})();
