// The planner web app: sign in with a token, pick a layer, places and a window, see it on kepler.gl; open a report.
// The token lives in this tab's sessionStorage and goes out only in the Authorization header to this server.
(function () {
  "use strict";
  var $ = function (id) { return document.getElementById(id); };
  var store = null;
  var places = [];

  function token() { return sessionStorage.getItem("citylake-token"); }

  function say(text, isError) {
    $("status").textContent = text;
    $("status").className = isError ? "error" : "";
  }

  function call(path, options) {
    options = options || {};
    options.headers = Object.assign({Authorization: "Bearer " + token()}, options.headers || {});
    return fetch(path, options).then(function (response) {
      if (response.status === 401) { signOut(); throw new Error("the token was not accepted; sign in again"); }
      if (!response.ok) {
        return response.json().catch(function () { return {}; }).then(function (body) {
          throw new Error(body.error || ("the server answered " + response.status));
        });
      }
      return response;
    });
  }

  function signIn(event) {
    event.preventDefault();
    sessionStorage.setItem("citylake-token", $("token").value.trim());
    $("token").value = "";
    start();
  }

  function signOut() {
    sessionStorage.removeItem("citylake-token");
    $("pick").hidden = true;
    $("reports").hidden = true;
    $("login").hidden = false;
  }

  function start() {
    if (!token()) return;
    call("/api/me").then(function (r) { return r.json(); }).then(function (me) {
      $("login").hidden = true;
      $("pick").hidden = false;
      $("who").textContent = "Signed in as " + me.name + " (" + me.role + ")";
      say("");
      loadPlaces();
      loadReports(me.role);
      if (!store) store = citylakeMount($("map"));
    }).catch(function (err) { say(err.message, true); });
  }

  function loadPlaces() {
    call("/api/places?format=json").then(function (r) { return r.json(); }).then(function (body) {
      places = body.rows;
      var categories = Array.from(new Set(places.map(function (p) { return p.category; }))).sort();
      fill($("category"), [["", "all places"]].concat(categories.map(function (c) { return [c, c]; })));
      fillPlaces();
    }).catch(function (err) { say(err.message, true); });
  }

  function fillPlaces() {
    var category = $("category").value;
    var chosen = places.filter(function (p) { return !category || p.category === category; });
    fill($("place"), [["", "all of them"]].concat(chosen.map(function (p) { return [p.place_id, p.name || p.place_id]; })));
  }

  function fill(select, options) {
    select.innerHTML = "";
    options.forEach(function (o) {
      var option = document.createElement("option");
      option.value = o[0];
      option.textContent = o[1];
      select.appendChild(option);
    });
  }

  function loadReports(role) {
    if (role === "pilot") return;
    call("/api/reports").then(function (r) { return r.json(); }).then(function (body) {
      var list = $("report-list");
      list.innerHTML = "";
      body.reports.forEach(function (report) {
        var item = document.createElement("li");
        item.textContent = report.place_id + " ";
        item.appendChild(reportLink("Open", report.name, false));
        item.appendChild(reportLink("Download", report.name, true));
        list.appendChild(item);
      });
      $("reports").hidden = body.reports.length === 0;
    }).catch(function () { $("reports").hidden = true; });
  }

  function reportLink(label, name, download) {
    var link = document.createElement("a");
    link.href = "#";
    link.textContent = label;
    link.className = download ? "download" : "open";
    link.addEventListener("click", function (event) {
      event.preventDefault();
      call("/api/reports/" + encodeURIComponent(name)).then(function (r) { return r.text(); }).then(function (html) {
        if (download) {
          var url = URL.createObjectURL(new Blob([html], {type: "text/html"}));
          var save = document.createElement("a");
          save.href = url;
          save.download = name;
          save.click();
        } else {
          // shown in a sandboxed frame: whatever a report holds runs no script and cannot reach this page's token
          var tab = window.open("", "_blank");
          var frame = tab.document.createElement("iframe");
          frame.setAttribute("sandbox", "");
          frame.style.cssText = "border:0;position:fixed;inset:0;width:100%;height:100%";
          frame.srcdoc = html;
          tab.document.title = name;
          tab.document.body.style.margin = "0";
          tab.document.body.appendChild(frame);
        }
      }).catch(function (err) { say(err.message, true); });
    });
    return link;
  }

  function show(event) {
    event.preventDefault();
    var query = new URLSearchParams();
    if ($("place").value) query.append("place", $("place").value);
    else if ($("category").value) query.append("category", $("category").value);
    if ($("from").value) query.append("from", $("from").value);
    if ($("to").value) query.append("to", $("to").value);
    var layer = $("layer").value;
    say("loading " + layer + "…");
    call("/api/maps/" + layer + "?" + query.toString()).then(function (r) { return r.json(); }).then(function (map) {
      var rows = map.datasets.map(function (d) { return d.csv.trim().split("\n").length - 1; });
      citylakeShow(store, map);
      say(map.title + ": " + rows[0] + " rows. " + (map.note || ""));
    }).catch(function (err) { say(err.message, true); });
  }

  $("login").addEventListener("submit", signIn);
  $("pick").addEventListener("submit", show);
  $("signout").addEventListener("click", signOut);
  $("category").addEventListener("change", fillPlaces);
  start();
})();
