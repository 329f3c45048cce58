// velostream UI: keeps each page's live fragment fresh, sends the forms to the JSON API and
// follows task logs. No framework; only same-origin fetches (see docs/api.md).
(function () {
  'use strict';

  var csrf = function () {
    var m = document.querySelector('meta[name="csrf-token"]');
    return m ? m.getAttribute('content') : '';
  };

  function flash(message, ok, url) {
    var box = document.getElementById('flash');
    if (!box) return;
    box.className = ok ? 'ok' : 'err';
    box.textContent = message;
    if (url) {
      box.appendChild(document.createTextNode(' '));
      var a = document.createElement('a');
      a.href = url;
      a.textContent = 'open';
      a.className = 'flash-link';
      box.appendChild(a);
    }
  }

  // Live fragments: every second while something on the page runs, every five otherwise.
  var live = document.getElementById('live');
  var timer = null;
  function schedule() {
    clearTimeout(timer);
    var root = live.querySelector('.live-root');
    var active = root && root.getAttribute('data-active') === 'true';
    timer = setTimeout(refresh, active ? 1000 : 5000);
  }
  function refresh() {
    clearTimeout(timer);
    fetch(live.getAttribute('data-src'), { headers: { Accept: 'text/html' }, cache: 'no-store' })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        // The fragment is rendered and escaped by the server's templates.
        if (html !== null) live.innerHTML = html;
      })
      .catch(function () {})
      .then(schedule);
  }
  if (live) schedule();

  // The mark form posts to the chosen task's URL.
  document.addEventListener('change', function (ev) {
    var select = ev.target;
    if (!select.classList || !select.classList.contains('js-mark-task')) return;
    var form = select.form;
    form.setAttribute('action', form.getAttribute('data-action-template').replace('TASK', encodeURIComponent(select.value)));
  });

  // Forms marked js-api go to the API as JSON with the CSRF header.
  document.addEventListener('submit', function (ev) {
    var form = ev.target;
    if (!form.classList || !form.classList.contains('js-api')) return;
    ev.preventDefault();
    var body = {};
    var params = {};
    var data = new FormData(form);
    data.forEach(function (value, key) {
      if (key === 'csrf_token' || key === 'next') return;
      if (key.indexOf('params.') === 0) params[key.slice(7)] = value;
      else if (value !== '') body[key] = value;
    });
    if (Object.keys(params).length) body.params = params;
    var button = form.querySelector('button');
    if (button) button.disabled = true;
    fetch(form.getAttribute('action'), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json', 'X-CSRF-Token': csrf() },
      body: JSON.stringify(body)
    })
      .then(function (r) {
        return r.json().catch(function () { return {}; }).then(function (d) { return { ok: r.ok, status: r.status, d: d }; });
      })
      .then(function (res) {
        var d = res.d;
        if (!res.ok) flash(d.error || ('HTTP ' + res.status), false);
        else if (d.message) flash(d.message, true);
        else if (d.run_id && d.cancelling) flash('Cancelling run ' + d.run_id, true);
        else if (d.run_id) flash('Started run ' + d.run_id, true, d.url);
        else if (d.backfill_id && d.cancelling) flash('Cancelling backfill ' + d.backfill_id, true);
        else if (d.backfill_id) flash('Started backfill ' + d.backfill_id + ': ' + d.summary, true);
        else if (d.dry_run) flash('Dry run: ' + d.summary + (d.slots || []).slice(0, 12).map(function (x) {
          return '; ' + x.logical_date + ' ' + x.action.replace(/_/g, ' ');
        }).join('') + ((d.slots || []).length > 12 ? '; ...' : ''), true);
        else if (d.dag_id) flash((d.paused ? 'Paused ' : 'Unpaused ') + d.dag_id, true);
      })
      .catch(function (e) { flash('Request failed: ' + e, false); })
      .then(function () {
        if (button) button.disabled = false;
        if (live) refresh();
      });
  });

  // Task logs: append new lines while the try runs.
  var log = document.getElementById('log');
  if (log) {
    var status = document.getElementById('log-status');
    var follow = function () {
      var url = new URL(log.getAttribute('data-src'), window.location.origin);
      url.searchParams.set('offset', log.getAttribute('data-offset') || '0');
      fetch(url, { cache: 'no-store' })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (c) {
          if (!c) return setTimeout(follow, 2000);
          var nearBottom = window.innerHeight + window.scrollY >= document.body.scrollHeight - 60;
          if (c.text) log.appendChild(document.createTextNode(c.text));
          if (nearBottom && c.text) window.scrollTo(0, document.body.scrollHeight);
          log.setAttribute('data-offset', String(c.next_offset));
          var more = c.next_offset < c.size;
          if (c.running || more) {
            if (status) status.textContent = 'following…';
            setTimeout(follow, more ? 50 : 1000);
          } else if (status) {
            status.textContent = 'try finished';
          }
        })
        .catch(function () { setTimeout(follow, 2000); });
    };
    if (log.getAttribute('data-running') === 'true') setTimeout(follow, 1000);
  }
})();
