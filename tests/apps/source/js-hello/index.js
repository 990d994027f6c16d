// A wasi:http handler in JavaScript: the cell calls it for every request.
addEventListener("fetch", (event) => {
  const url = new URL(event.request.url);
  event.respondWith(
    new Response(`hello from javascript ${url.pathname}\n`, {
      headers: { "content-type": "text/plain" },
    }),
  );
});
