// Does not parse: the push fails with node's message in the staging log.
addEventListener("fetch", (event) => {
  event.respondWith(new Response("hello from javascript" +));
});
