(function () {
  'use strict';
  // The page swaps in a fresh copy of its <main>, as the server renders it, every EVERY ms.
  // With a web token, the token is asked for once and kept in sessionStorage; it reaches
  // the other slots' pages in the fragment of their links (never sent to a server).
  var KEY = 'runner-web-token', EVERY = 2000;
  var fragment = new URLSearchParams(location.hash.slice(1));
  if (fragment.has('token')) {
    sessionStorage.setItem(KEY, fragment.get('token'));
    history.replaceState(null, '', location.pathname + location.search);
  }

  function main() { return document.getElementById('status'); }
  function token() { return sessionStorage.getItem(KEY); }

  function show(fresh) {
    main().replaceWith(document.importNode(fresh, true));
    var form = document.getElementById('token-form');
    if (form) { form.addEventListener('submit', submitted); }
  }

  function refresh() {
    var headers = {Accept: 'text/html'};
    if (token()) { headers.Authorization = 'Bearer ' + token(); }
    fetch(location.pathname, {headers: headers, cache: 'no-store'}).then(function (answer) {
      return answer.text().then(function (text) {
        var fresh = new DOMParser().parseFromString(text, 'text/html').getElementById('status');
        if (answer.status === 401 && fresh) {
          fresh.querySelector('#refused').hidden = !token();
          sessionStorage.removeItem(KEY);
        }
        if (fresh) { show(fresh); }
        if (answer.status !== 401) { setTimeout(refresh, EVERY); }
      });
    }, function () {
      main().dataset.offline = 'yes';
      var note = document.getElementById('offline');
      if (note) { note.hidden = false; }
      setTimeout(refresh, EVERY);
    });
  }

  function submitted(event) {
    event.preventDefault();
    sessionStorage.setItem(KEY, document.getElementById('token').value);
    refresh();
  }

  document.addEventListener('click', function (event) {
    var link = event.target.closest('a.member');
    if (link && token()) {
      event.preventDefault();
      location.href = link.href.split('#')[0] + '#token=' + encodeURIComponent(token());
    }
  });

  if (main().dataset.locked === 'yes' && !token()) {
    document.getElementById('token-form').addEventListener('submit', submitted);
  } else if (main().dataset.locked === 'yes') {
    refresh();
  } else {
    setTimeout(refresh, EVERY);
  }
}());
