/* Stand-ins for the TensorRT shared libraries (libnvinfer, libnvonnxparser, libnvinfer_plugin and,
 * for 8.x, libnvparsers) so that the real pybind11 module of the tensorrt bindings wheels can be
 * imported on a machine without TensorRT or a GPU. Every entry point the module links against
 * (nm -D --undefined-only tensorrt.so, 8.6.1 .. 11.4) returns NULL / 0: importing works and gives
 * the real classes, enums and signatures; creating a Builder or Runtime fails as it would without
 * a GPU ("factory function returned nullptr"). Built per major version with the matching soname
 * by tests/trt_bindings/prepare.py. */
#include <stddef.h>

void *createInferBuilder_INTERNAL(void *logger, int version) { (void)logger; (void)version; return NULL; }
void *createInferRuntime_INTERNAL(void *logger, int version) { (void)logger; (void)version; return NULL; }
void *createInferRefitter_INTERNAL(void *engine, void *logger, int version)
{ (void)engine; (void)logger; (void)version; return NULL; }
void *getPluginRegistry(void) { return NULL; }
void *getBuilderPluginRegistry(int capability) { (void)capability; return NULL; }
int initLibNvInferPlugins(void *logger, const char *ns) { (void)logger; (void)ns; return 0; }
void *createNvOnnxParser_INTERNAL(void *network, void *logger, int version)
{ (void)network; (void)logger; (void)version; return NULL; }
void *createNvOnnxParserRefitter_INTERNAL(void *refitter, void *logger, int version)
{ (void)refitter; (void)logger; (void)version; return NULL; }
int getNvOnnxParserVersion(void) { return 0; }
/* TensorRT 8.x only: the UFF and Caffe parsers of libnvparsers.so.8 (C++ symbols, never called). */
void *_ZN11nvuffparser15createUffParserEv(void) { return NULL; }
void _ZN11nvuffparser8FieldMapC1EPKcPKvNS_9FieldTypeEi(void) {}
void *_ZN14nvcaffeparser117createCaffeParserEv(void) { return NULL; }
void _ZN14nvcaffeparser123shutdownProtobufLibraryEv(void) {}
