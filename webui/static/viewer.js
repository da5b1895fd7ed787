// <model-viewer> settings, read when its module loads (so this classic script comes
// first): the meshopt decoder from our own vendor folder instead of a CDN. The viewer
// loads each model's meshopt-compressed copy (coordinator/meshes/compact.py).
self.ModelViewerElement = Object.assign(self.ModelViewerElement || {}, {
  meshoptDecoderLocation: "/static/vendor/meshopt_decoder.js",
});
