// Keeps this flamegraph in step with the others on a comparison page:
// reports zoom, reset and search to the page, and replays the others'.
(function () {
    "use strict";
    if (window.parent === window) return;
    var replaying = false;
    // inferno records zoom and search in the URL; a blob: URL cannot take
    // a query, so that bookkeeping is skipped here.
    var replaceState = history.replaceState;
    history.replaceState = function () {
        try { return replaceState.apply(history, arguments); } catch (e) { return undefined; }
    };
    function frameName(g) {
        return g.querySelector("title").textContent.replace(/ \([^()]*\)$/, "");
    }
    function geometry(g) {
        var a = g.querySelector("rect").attributes;
        return { x: parseInt(a["fg:x"].value, 10), w: parseInt(a["fg:w"].value, 10), y: parseFloat(a.y.value) };
    }
    // Frame names from the root ("all") down to g.
    function pathOf(g) {
        var t = geometry(g);
        var found = [];
        var all = document.getElementById("frames").children;
        for (var i = 0; i < all.length; i++) {
            if (all[i] === g) continue;
            var b = geometry(all[i]);
            var above = inverted ? b.y < t.y : b.y > t.y;
            if (above && b.x <= t.x && b.x + b.w >= t.x + t.w) found.push([b.y, frameName(all[i])]);
        }
        found.sort(function (p, q) { return inverted ? p[0] - q[0] : q[0] - p[0]; });
        var names = found.map(function (p) { return p[1]; });
        names.push(frameName(g));
        return names;
    }
    // The frame at the longest prefix of path that exists here (widest on ties).
    function findPath(path) {
        var best = null, bestDepth = 0, bestWidth = -1;
        var all = document.getElementById("frames").children;
        for (var i = 0; i < all.length; i++) {
            var depth = path.indexOf(frameName(all[i]));
            if (depth < 0) continue;
            var p = pathOf(all[i]);
            if (p.length > path.length) continue;
            var same = true;
            for (var k = 0; k < p.length && same; k++) same = p[k] === path[k];
            if (!same) continue;
            var w = geometry(all[i]).w;
            if (p.length > bestDepth || (p.length === bestDepth && w > bestWidth)) {
                best = all[i]; bestDepth = p.length; bestWidth = w;
            }
        }
        return best;
    }
    function send(message) {
        if (replaying) return;
        message.flamegraphSync = true;
        window.parent.postMessage(message, "*");
    }
    var zoomHere = zoom, unzoomHere = unzoom, searchHere = search, resetSearchHere = reset_search;
    zoom = function (node) { zoomHere(node); send({ kind: "zoom", path: pathOf(node) }); };
    unzoom = function () { unzoomHere(); send({ kind: "unzoom" }); };
    search = function (term) { searchHere(term); send({ kind: "search", term: String(term) }); };
    reset_search = function () { resetSearchHere(); send({ kind: "reset_search" }); };
    window.addEventListener("message", function (e) {
        var m = e.data;
        if (e.source !== window.parent || !m || m.flamegraphSync !== true) return;
        replaying = true;
        try {
            if (m.kind === "zoom" && Array.isArray(m.path)) {
                var node = findPath(m.path);
                unzoom();
                if (node && pathOf(node).length > 1) zoom(node);
            } else if (m.kind === "unzoom") {
                unzoom();
            } else if (m.kind === "search" && typeof m.term === "string") {
                if (searching) search_prompt();
                search(m.term);
            } else if (m.kind === "reset_search") {
                if (searching) search_prompt();
            }
        } finally {
            replaying = false;
        }
    });
    window.addEventListener("load", function () {
        var root = document.documentElement;
        send({ kind: "ready", height: parseFloat(root.getAttribute("height")) || root.getBoundingClientRect().height });
    });
})();
