/* Placeholder translation unit for a layer library with no sources yet. */
typedef int tsr__empty_translation_unit;
